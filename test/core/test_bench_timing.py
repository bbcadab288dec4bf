"""How the benchmarks time things side by side: in rounds, so that a machine's drift falls on every function."""
from ges_core.bench.common import interleaved_median_ms, median_ms


def test_interleaved_timing_runs_each_function_once_a_round_after_its_warmup():
    calls = []
    ms = interleaved_median_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                               warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())


def test_a_slower_function_reads_slower():
    import time
    ms = interleaved_median_ms({"fast": lambda: None, "slow": lambda: time.sleep(0.01)}, repeats=3)
    assert ms["slow"] >= 10 > ms["fast"]
    assert median_ms(lambda: time.sleep(0.01), repeats=3) >= 10
