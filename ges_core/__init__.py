"""ges_core: the GES deep-equilibrium stereo network in pure PyTorch (no ROS imports)."""
from .config import GESConfig
from .deq.solvers import choose_solver, solver_names
from .model.ges import GES, GESOutput, build_model

__all__ = ["GESConfig", "GES", "GESOutput", "build_model", "load_predictor", "choose_solver", "solver_names"]


def load_predictor(weights="default", *, device="cpu", solver=None, **kwargs):
    """Load weights (a .safetensors/.onnx path or "default") into a ready-to-use Predictor."""
    from .predictor import load_predictor as _load
    return _load(weights, device=device, solver=solver, **kwargs)
