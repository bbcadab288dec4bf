"""The learned hyper-Anderson solver at tiny size: it trains, its 4-step residual drops, it is a drop-in solver."""
import numpy as np
import pytest
import torch

from ges_core import load_predictor
from ges_core.deq.hyper import train_solver_from_config


@pytest.mark.parametrize("extra", [{}, {"init_levels": 3, "init_width": 16, "beta_max": 1.5}])
def test_train_solver_lowers_the_4_step_distance_and_loads(tmp_path, tiny_weights, extra):
    """The default solver and the one whose initializer also corrects the coarser hidden states."""
    out = train_solver_from_config(str(tiny_weights), {"steps": 40, "height": 32, "width": 64, "max_disp": 12,
                                                       "fp_iters": 25, "lr": 0.003, "output": str(tmp_path / "w.safetensors"),
                                                       **extra}, progress=False)
    rows = [__import__("json").loads(l) for l in open(tmp_path / "w.jsonl")]
    first = np.mean([r["final_distance"] for r in rows[:8]])
    last = np.mean([r["final_distance"] for r in rows[-8:]])
    assert last < first
    pred = load_predictor(out, solver="hyper_anderson")
    assert pred.solver == "hyper_anderson" and pred.solvers == ("anderson", "fixed_point", "hyper_anderson")
    hyper = pred.model.learned_solvers["hyper_anderson"]
    assert len(hyper.init_coarse) == extra.get("init_levels", 1) - 1 and hyper.beta_max == extra.get("beta_max", 1.0)
    img = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    r = pred.predict(img, np.roll(img, -2, axis=1), iters=4)
    assert r.iters == 4 and np.isfinite(r.disparity).all()


def test_missing_solver_weights_fall_back_to_anderson(tiny_weights):
    with pytest.warns(UserWarning, match="using anderson"):
        pred = load_predictor(str(tiny_weights), solver="hyper_anderson")
    assert pred.solver == "anderson"


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "hyper_anderson"])
def test_one_traced_solve_equals_separate_solves(solver):
    """The convergence benchmark reads k-iteration results off one solve; that must be what k-iteration
    solves return."""
    from ges_core import GESConfig, build_model
    from ges_core.bench.convergence import solve_trace
    from ges_core.deq.hyper import HyperAnderson
    torch.manual_seed(0)
    model = build_model(GESConfig.preset("tiny")).eval()
    model.learned_solvers["hyper_anderson"] = HyperAnderson(hidden=model.config.hidden_dims[0], m=3).eval()
    g = torch.Generator().manual_seed(1)
    left = torch.rand(1, 3, 32, 64, generator=g) * 255
    with torch.no_grad():
        enc = model.encode(left, torch.roll(left, -3, dims=3))
        trace = solve_trace(model, enc, solver=solver, iters=6)
        assert len(trace) == 6
        for k in range(1, 7):
            z, info = model.solve(enc, iters=k, solver=solver, tol=0.0)
            assert torch.equal(trace[k - 1][0], z) and trace[k - 1][1] == info.residuals[-1], k
