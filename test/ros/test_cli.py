"""`ges` subcommands at tiny size: predict, eval, export (ONNX Runtime vs PyTorch), bench (table structure)."""
import json
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ges_core.data.io import read_pfm

GES = [sys.executable, "-m", "ges_ros.cli"]   # the installed `ges`: the core commands and the ROS ones


def run(*args, ok=True):
    r = subprocess.run([*GES, *map(str, args)], capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory, motorcycle_small):
    left, right, gt, valid, cam = motorcycle_small
    d = tmp_path_factory.mktemp("pair")
    cv2.imwrite(str(d / "left.png"), left[:64, :96, ::-1])
    cv2.imwrite(str(d / "right.png"), right[:64, :96, ::-1])
    return d


def test_predict_writes_every_output(tmp_path, tiny_weights, pair_files):
    r = run("predict", pair_files / "left.png", pair_files / "right.png", "-o", tmp_path, "--weights", tiny_weights,
            "--iters", "2", "--f", "500", "--baseline", "0.2", "--cx", "48", "--cy", "32")
    for name in ("disparity.pfm", "disparity.png", "disparity_color.png", "confidence.png", "points.ply"):
        assert (tmp_path / name).stat().st_size > 0, name
    pfm = read_pfm(str(tmp_path / "disparity.pfm"))
    png = cv2.imread(str(tmp_path / "disparity.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and pfm.shape == (64, 96)
    np.testing.assert_allclose(png / 256.0, pfm, atol=1 / 256 + 1e-6)    # the KITTI encoding
    assert (tmp_path / "points.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    assert "2 iterations" in r.stdout


def test_predict_folder_and_errors(tmp_path, tiny_weights, pair_files):
    (tmp_path / "L").mkdir()
    (tmp_path / "R").mkdir()
    for k in range(2):
        cv2.imwrite(str(tmp_path / "L" / f"{k}.png"), cv2.imread(str(pair_files / "left.png")))
        cv2.imwrite(str(tmp_path / "R" / f"{k}.png"), cv2.imread(str(pair_files / "right.png")))
    run("predict", tmp_path / "L", tmp_path / "R", "-o", tmp_path / "out", "--weights", tiny_weights, "--iters", "1")
    assert (tmp_path / "out" / "0" / "disparity.pfm").exists() and (tmp_path / "out" / "1" / "disparity.pfm").exists()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = run("predict", tmp_path / "bad.png", pair_files / "right.png", "-o", tmp_path / "o2", "--weights",
            tiny_weights, ok=False)
    assert r.returncode == 2 and "bad.png" in r.stderr


def test_eval_folder_with_sgbm(tmp_path, tiny_weights, motorcycle_small):
    left, right, gt, valid, cam = motorcycle_small
    scene = tmp_path / "data" / "moto"
    scene.mkdir(parents=True)
    cv2.imwrite(str(scene / "left.png"), left[..., ::-1])
    cv2.imwrite(str(scene / "right.png"), right[..., ::-1])
    cv2.imwrite(str(scene / "disp_left.png"), np.round(np.where(valid, gt, 0) * 4).astype(np.uint16))
    (scene / "meta.json").write_text(json.dumps({"disparity_divisor": 4, "invalid_value": 0}))
    r = run("eval", "--dataset", "folder", tmp_path / "data", "--weights", tiny_weights, "--iters", "1",
            "--baseline", "sgbm", "--json", tmp_path / "r.json")
    assert "| moto |" in r.stdout and "SGBM EPE" in r.stdout and "| mean |" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["rows"][0]["sgbm_epe"] < res["rows"][0]["ges_epe"]      # an untrained net loses to SGBM


def test_eval_scores_dense_ground_truth_and_names_a_broken_scene(tmp_path, tiny_weights, motorcycle_small):
    """invalid_value "none" (FlyingThings3D: dense) is read as every pixel valid; a scene that cannot be read is
    named with its file, and the other scenes' rows are still printed and written (exit 1)."""
    from ges_core.data.io import write_pfm
    left, right, gt, valid, cam = motorcycle_small
    for name, meta in (("a_dense", {"disparity_divisor": 1, "invalid_value": "none"}),
                       ("b_broken", {"disparity_divisor": 1, "invalid_value": 0})):
        scene = tmp_path / "data" / name
        scene.mkdir(parents=True)
        cv2.imwrite(str(scene / "left.png"), left[..., ::-1])
        cv2.imwrite(str(scene / "right.png"), right[..., ::-1])
        (scene / "meta.json").write_text(json.dumps(meta))
    write_pfm(str(tmp_path / "data" / "a_dense" / "disp_left.pfm"), np.where(valid, gt, 0))
    (tmp_path / "data" / "b_broken" / "disp_left.png").write_bytes(b"not a png")
    r = run("eval", "--dataset", "folder", tmp_path / "data", "--weights", tiny_weights, "--iters", "1",
            "--json", tmp_path / "r.json", ok=False)
    assert r.returncode == 1, r.stderr
    assert "| a_dense |" in r.stdout and "b_broken" in r.stdout and "disp_left.png" in r.stdout
    assert "1 of 2 scenes could not be scored" in r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert [row["scene"] for row in res["rows"]] == ["a_dense", "b_broken"]
    assert "ges_epe" in res["rows"][0] and "disp_left.png" in res["rows"][1]["error"]
    assert res["mean"]["scenes"] == 1 and res["mean"]["ges_epe"] == res["rows"][0]["ges_epe"]


def test_scene_reader_dense_and_sparse_markers(tmp_path):
    from ges_core.data.io import read_scene_disparity
    raw = np.array([[0, 8], [16, 4]], np.uint16)
    cv2.imwrite(str(tmp_path / "disp_left.png"), raw)
    for invalid, want in (("none", [[1, 1], [1, 1]]), (0, [[0, 1], [1, 1]]), (4, [[1, 1], [1, 0]])):
        (tmp_path / "meta.json").write_text(json.dumps({"disparity_divisor": 4, "invalid_value": invalid}))
        d, v = read_scene_disparity(str(tmp_path / "disp_left.png"))
        assert v.tolist() == np.array(want, bool).tolist(), invalid
        assert d[1, 0] == 4.0
    (tmp_path / "meta.json").write_text(json.dumps({"invalid_value": "never"}))
    with pytest.raises(ValueError, match="meta.json"):
        read_scene_disparity(str(tmp_path / "disp_left.png"))


def test_export_onnx_matches_pytorch(tmp_path, tiny_weights):
    r = run("export", "--format", "onnx", "--height", "64", "--width", "96", "--iters", "2", "--weights",
            tiny_weights, "-o", tmp_path / "m.onnx")
    assert "OK" in r.stdout and "max |disparity difference|" in r.stdout and "solver anderson" in r.stdout
    assert float(r.stdout.split("max |disparity difference| = ")[1].split()[0]) < 0.05
    from ges_core import load_predictor
    from ges_core.export import verify_onnx
    # the check can fail: the 2-iteration graph against the predictor's 6 iterations is far outside the limit
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    diff, spread = verify_onnx(load_predictor(tiny_weights, backend="torch"), str(tmp_path / "m.onnx"),
                               left=img, right=np.roll(img, -4, axis=1), iters=6)
    assert diff > max(0.05, 10 * spread), (diff, spread)
    pred = load_predictor(str(tmp_path / "m.onnx"))
    assert pred.solver == "anderson (unrolled, 2 iterations)"
    out = pred.predict(img, img)
    assert out.disparity.shape == (64, 96) and out.iters == 2 and pred.config.max_disp == 32
    run("export", "--format", "torchscript", "--height", "64", "--width", "96", "--iters", "1", "--weights",
        tiny_weights, "-o", tmp_path / "m.pt")
    assert (tmp_path / "m.pt").stat().st_size > 0


def test_export_weights_from_a_checkpoint_sets_the_inference_topk(tmp_path):
    import torch
    from ges_core import GESConfig, build_model, load_predictor
    from ges_core.train import save_checkpoint
    torch.manual_seed(0)
    cfg = GESConfig.preset("tiny")
    model = build_model(cfg)
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "step": 7,
                                        "config": cfg.to_json()})
    run("export-weights", tmp_path / "c.pt", "-o", tmp_path / "same.safetensors", "--fp32")
    r = run("export-weights", tmp_path / "c.pt", "-o", tmp_path / "all.safetensors", "--fp32", "--topk", "0")
    assert "step 7 (topk 0)" in r.stdout
    same, every = (load_predictor(str(tmp_path / f), device="cpu") for f in ("same.safetensors", "all.safetensors"))
    assert same.config.topk == cfg.topk != 0 and every.config.topk == 0
    for k, v in model.state_dict().items():
        assert torch.equal(every.model.state_dict()[k], v), k
    # the setting reaches inference: the initial disparity differs, not the parameters
    img = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    a, b = (p.predict(img, np.roll(img, -3, axis=1), iters=1).disparity for p in (same, every))
    assert not np.allclose(a, b)
    bad = run("export-weights", tmp_path / "c.pt", "-o", tmp_path / "x.safetensors", "--topk", "-1", ok=False)
    assert bad.returncode != 0 and "--topk must be 0" in bad.stderr and not (tmp_path / "x.safetensors").exists()


def test_bench_training_times_recipes_side_by_side_with_their_pools_rendered_first(tmp_path):
    """`ges bench training`: each recipe's steps an hour beside the first's; a recipe drawing from a pool of
    scenes is timed with the scenes it draws already rendered, and its pool's one-time rendering is added back,
    both in a render cache of the bench's own."""
    import yaml
    base = {"model": {"preset": "tiny", "train_iters": 1}, "batch_size": 1, "steps": 10, "cpu_amp": False,
            "data": {"dataset": "procedural", "height": 32, "width": 64, "max_disp": 8}}
    pooled = {**base, "data": {**base["data"], "pool": 5, "render_cache": str(tmp_path / "cache")}}
    for name, cfg in (("plain", base), ("pooled", pooled)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    run("bench", "training", "--docs", tmp_path, "--train-configs", tmp_path / "plain.yaml", tmp_path / "pooled.yaml",
        "--train-steps", "2", "--repeats", "1")
    text = (tmp_path / "TRAINING.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and ".yaml" in line}
    plain, pool = rows[str(tmp_path / "plain.yaml")], rows[str(tmp_path / "pooled.yaml")]
    assert plain[3] == "1.00" and plain[4] == "0.0" and plain[5] == plain[2]    # nothing rendered once: no change
    assert float(pool[5]) < float(pool[2])              # the pool's one-time rendering costs steps an hour
    assert "procedural 5 at" in text
    assert not (tmp_path / "cache").exists()            # timed in a render cache of its own, never the run's


@pytest.mark.parametrize("mode,extra", [
    ("memory", ["--preset", "tiny", "--height", "32", "--width", "64", "--iters-list", "1,2,4"]),
    ("memory", ["--candidates", "fast + both", "--height", "32", "--width", "64", "--iters-list", "1,4"]),
    ("latency", ["--presets", "tiny", "--sizes", "32x64", "--iters-list", "1,2", "--repeats", "1", "--variants",
                 "eager,channels_last"]),
    ("convergence", ["--iters-list", "1,2"]),
    ("node", ["--node-size", "60x80", "--repeats", "1"]),
    ("flops", ["--presets", "tiny", "--sizes", "32x64"]),
    ("accuracy", ["--iters-list", "1", "--data", "/nonexistent"]),
    ("confidence", ["--data", "/nonexistent"]),
    ("autoscale", ["--stream-pairs", "3", "--repeats", "1"]),
    ("gpu", ["--device", "cpu", "--presets", "tiny", "--sizes", "32x64", "--precisions", "fp32,bf16", "--gpu-modes",
             "eager,cuda_graph", "--repeats", "1", "--warmup", "1", "--ort"]),
])
def test_bench_modes_write_their_tables(tmp_path, tiny_weights, mode, extra):
    run("bench", mode, "--docs", tmp_path, "--weights", tiny_weights, *extra)
    doc = tmp_path / {"accuracy": "ACCURACY.md", "confidence": "ACCURACY.md", "gpu": "GPU.md"}.get(mode, "BENCHMARKS.md")
    text = doc.read_text()
    assert f"<!-- bench:{mode} -->" in text and f"<!-- /bench:{mode} -->" in text
    assert "torch" in text and "threads" in text and "|---|" in text
    run("bench", mode, "--docs", tmp_path, "--weights", tiny_weights, *extra)      # rerun replaces in place
    assert doc.read_text().count(f"<!-- bench:{mode} -->") == 1
    if mode == "memory":         # the architecture measured is named, with the command that measures it again
        which = "fast + both" if "--candidates" in extra else "preset tiny"
        assert f"; {which}; 32x64" in text and shlex.quote(extra[1]) in text
    if mode == "latency":        # the node's default beside stereo_image_proc's SGBM, with their ratio
        assert "stereo_image_proc" in text and "GES/SGBM" in text
    if mode == "autoscale":      # both settings at both sizes, with the probes counted
        assert "| 640x480 | auto |" in text and "| 1920x1080 | 1.0 |" in text and "auto / scale 1" in text
    if mode == "confidence":     # every threshold with the oracle beside it
        assert "| 0.9 |" in text and "oracle bad-2" in text
    if mode == "gpu":            # every precision and the ONNX Runtime row; cuda_graph is left out on a CPU
        assert "| tiny | 64x32 | bf16 | eager |" in text and "onnxruntime CPU" in text and "cuda_graph" not in text


def test_bench_accuracy_writes_the_weights_record(tmp_path, tiny_weights):
    rec = tmp_path / "new_folder" / "record.json"     # a folder that does not exist yet is made
    run("bench", "accuracy", "--docs", tmp_path / "docs", "--weights", tiny_weights, "--iters-list", "1", "--data",
        "/nonexistent", "--record", rec)
    data = json.loads(rec.read_text())
    m = data["motorcycle"]
    assert data["iters"] == 4 and set(m) == {"ges_epe", "ges_bad2", "sgbm_epe", "sgbm_bad2", "beats_sgbm_bad2", "scenes"}
    assert set(data["iterations"]) == {"1"}
    # SGBM on the real pair is far better than a random tiny network
    assert m["sgbm_bad2"] < m["ges_bad2"] and m["beats_sgbm_bad2"] is False


def test_export_leaves_the_model_in_inference_mode(tmp_path, tiny_weights):
    """torch.onnx.export restores its wrapper's mode; a wrapper in training mode once left the predictor's model in
    training mode (training's top-k), so the export verified against a different disparity than the node's."""
    import warnings
    from ges_core import load_predictor
    from ges_core.export import export
    pred = load_predictor(str(tiny_weights))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(pred.model, str(tmp_path / "m.onnx"), fmt="onnx", height=32, width=64, iters=1)
    assert not pred.model.training
