"""Deep equilibrium: solvers, backward modes against BPTT, warm start, training memory independence."""
import dataclasses

import pytest
import torch
from torch import nn

from ges_core import GESConfig, build_model
from ges_core.deq.backward import ift, phantom
from ges_core.deq.solvers import anderson, fixed_point, get_solver
from ges_core.model.update import ConvGRU


class GRUMap(nn.Module):
    """f(h) = ConvGRU(h; x), a contractive map like one GES update level."""

    def __init__(self, ch: int = 8, scale: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gru = ConvGRU(ch, ch)
        with torch.no_grad():
            for p in self.gru.parameters():
                p.mul_(scale)
        self.ctx = [torch.randn(1, ch, 12, 12) * 0.5 for _ in range(3)]
        self.x = nn.Parameter(torch.randn(1, ch, 12, 12))
        self.shape = (1, ch, 12, 12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z.view(self.shape)
        return self.gru(h, self.ctx, self.x).flatten(1)


def _grads(m: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    m.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()])


def _loss(z):
    return (z ** 2).sum() + z.sum()


@pytest.fixture
def gru_map():
    return GRUMap()


def _bptt_grad(m, iters=80):
    z = torch.zeros(1, 8 * 144)
    for _ in range(iters):
        z = m(z)
    return _grads(m, _loss(z))


def test_gradcheck_ift_matches_bptt(gru_map):
    ref = _bptt_grad(gru_map)
    z, info = anderson(gru_map, torch.zeros(1, 8 * 144), max_iter=100, tol=1e-9)
    g = _grads(gru_map, _loss(ift(gru_map, z, iters=100, tol=1e-10)))
    assert torch.cosine_similarity(g, ref, dim=0) > 0.99


def test_gradcheck_phantom_matches_bptt(gru_map):
    ref = _bptt_grad(gru_map)
    z, _ = anderson(gru_map, torch.zeros(1, 8 * 144), max_iter=100, tol=1e-9)
    g = _grads(gru_map, _loss(phantom(gru_map, z, steps=1, tau=1.0)))
    assert torch.cosine_similarity(g, ref, dim=0) > 0.9


def test_anderson_needs_fewer_iterations_than_fixed_point():
    m = GRUMap(scale=0.9)          # slower contraction: plain iteration crawls
    z0 = torch.zeros(1, 8 * 144)
    _, fp = fixed_point(m, z0, max_iter=200, tol=1e-6)
    _, an = anderson(m, z0, max_iter=200, tol=1e-6)
    assert an.residuals[-1] < 1e-6 and fp.residuals[-1] < 1e-6
    assert an.iters < fp.iters


def _anderson_by_the_book(func, z0, *, max_iter, m, beta, lam=1e-4):
    """Anderson as written in Walker & Ni: the last m iterates and f-values stacked, the constrained least squares
    solved afresh each step; -> the residual of every step."""
    from ges_core.deq.solvers import anderson_alpha, relative_residual
    xs, fs, x, residuals = [], [], z0, []
    for _ in range(max_iter):
        fx = func(x)
        residuals.append(relative_residual(fx, x))
        xs, fs = (xs + [x])[-m:], (fs + [fx])[-m:]
        if len(xs) == 1:
            x = fx
            continue
        X, F = torch.stack(xs, 1), torch.stack(fs, 1)
        alpha = anderson_alpha(F - X, lam=lam).unsqueeze(1)
        x = beta * (alpha @ F)[:, 0] + (1 - beta) * (alpha @ X)[:, 0]
    return residuals


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_anderson_takes_the_steps_of_the_textbook_method(beta):
    """The solver's ring-buffer history and incremental Gram matrix give the textbook iterates, past the point
    where the history wraps (m = 3, 10 steps)."""
    m = GRUMap(scale=0.9)
    z0 = torch.randn(1, 8 * 144, generator=torch.Generator().manual_seed(3)) * 0.1
    want = _anderson_by_the_book(m, z0, max_iter=10, m=3, beta=beta)
    _, info = anderson(m, z0, max_iter=10, m=3, beta=beta)
    assert info.iters == 10
    torch.testing.assert_close(torch.tensor(info.residuals), torch.tensor(want), rtol=1e-3, atol=1e-7)
    assert want[-1] < 0.1 * want[0]                  # and they converge


def test_non_finite_values_are_found():
    from ges_core.deq.solvers import _finite
    x = torch.zeros(3, 1000)
    assert _finite(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[2, 517] = bad
        assert not _finite(y)
    assert _finite(torch.full((4, 4), 60000.0, dtype=torch.float16))     # a half-precision sum does not overflow


def test_warm_start_from_the_fixed_point_converges_in_one_iteration(gru_map):
    z, _ = anderson(gru_map, torch.zeros(1, 8 * 144), max_iter=100, tol=1e-10)
    for solver in ("fixed_point", "anderson"):
        _, info = get_solver(solver)(gru_map, z, max_iter=20, tol=1e-6)
        assert info.iters == 1


def test_solver_registry_exception():
    with pytest.raises(ValueError, match="anderson"):
        get_solver("broyden")


def test_divergence_is_flagged_and_best_iterate_kept():
    calls = {"n": 0}

    def f(z):
        calls["n"] += 1
        return z * 0.5 if calls["n"] < 3 else z * float("nan")
    z, info = fixed_point(f, torch.ones(1, 4), max_iter=10)
    assert info.diverged and torch.isfinite(z).all() and info.iters == 3


@pytest.mark.parametrize("backward", ["phantom", "ift", "bptt"])
def test_ges_training_step_each_backward(backward):
    cfg = dataclasses.replace(GESConfig.preset("tiny"), backward=backward, train_iters=3)
    torch.manual_seed(0)
    m = build_model(cfg).train()
    left = torch.rand(1, 3, 32, 64) * 255
    out = m(left, torch.roll(left, -2, dims=3))
    (out.disparity.mean() + out.init_disparity.mean()).backward()
    grads = [p.grad for p in m.update_block.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="valid"):
        bad = dataclasses.replace(cfg, backward="adjoint")
        build_model(bad).train()(left, left)


def test_deq_training_graph_does_not_grow_with_iterations():
    """Autograd keeps one update per phantom step whatever the forward iteration count (BPTT keeps all)."""
    def saved_tensors(backward, iters):
        cfg = dataclasses.replace(GESConfig.preset("tiny"), backward=backward, train_iters=iters, tol=0.0)
        torch.manual_seed(0)
        m = build_model(cfg).train()
        left = torch.rand(1, 3, 32, 64) * 255
        count = [0]

        def pack(t):
            count[0] += t.numel()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(left, left)
        return count[0]
    assert saved_tensors("phantom", 16) == saved_tensors("phantom", 2)
    assert saved_tensors("bptt", 16) > 4 * saved_tensors("bptt", 2) / 2


def test_anytime_training_draws_iterations_and_supervises_states_along_the_solve():
    """train_iters_max: a random forward count per step; fp_corrections: states sampled along the solve come back
    decoded (with a gradient) and enter the loss; at inference neither applies."""
    import dataclasses
    from ges_core import GESConfig, build_model
    from ges_core.losses import stereo_loss
    torch.manual_seed(0)
    cfg = dataclasses.replace(GESConfig.preset("tiny"), train_iters=2, train_iters_max=6, fp_corrections=2)
    model = build_model(cfg).train()
    x = torch.rand(1, 3, 32, 64) * 255
    counts = set()
    for _ in range(12):
        out = model(x, x)
        counts.add(out.iters)
        assert 1 <= len(out.corrections) <= 2 and all(c.shape == out.disparity.shape for c in out.corrections)
        assert all(c.requires_grad for c in out.corrections)
    assert counts <= set(range(2, 7)) and len(counts) >= 3
    target, valid = torch.full((1, 1, 32, 64), 3.0), torch.ones(1, 1, 32, 64, dtype=torch.bool)
    with_corr, _ = stereo_loss(out, target, valid, max_disp=32)
    without, _ = stereo_loss(out._replace(corrections=()), target, valid, max_disp=32)
    assert float(with_corr.detach()) > float(without.detach())
    with_corr.backward()
    model.eval()
    with torch.no_grad():
        out = model(x, x)
    assert out.corrections == () and out.iters == cfg.iters


def test_one_fallback_policy_for_learned_solvers():
    from ges_core.deq.solvers import choose_solver, solver_names
    assert set(solver_names()) == {"hyper_anderson", "anderson", "fixed_point"}
    assert choose_solver("hyper_anderson", ("anderson", "hyper_anderson")) == ("hyper_anderson", None)
    name, warning = choose_solver("hyper_anderson", ("anderson", "fixed_point"))
    assert name == "anderson" and "no trained hyper_anderson" in warning
    with pytest.raises(ValueError, match="unknown solver 'broyden'.*valid"):
        choose_solver("broyden", ("anderson",))
