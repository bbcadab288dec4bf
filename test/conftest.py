"""Shared fixtures. ROS traffic stays on this machine, in a domain of its own, and large images use
Fast DDS's LARGE_DATA transport (best-effort large images are otherwise lost)."""
import os

os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
# the OpenVINO backend's on-disk cache: one of this run's own, never the user's ~/.cache/ges_ros
import tempfile  # noqa: E402
os.environ.setdefault("GES_CACHE_DIR", tempfile.mkdtemp(prefix="ges_test_cache_"))
# tests run tiny models; one thread each keeps the test process and node subprocesses from
# oversubscribing the cores (OpenMP spin-waits make that 10x slower)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from ges_core import GESConfig, build_model  # noqa: E402
from ges_core.weights import save_weights  # noqa: E402


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A tiny randomly initialised model saved as safetensors (no trained weights needed)."""
    torch.manual_seed(0)
    cfg = GESConfig.preset("tiny")
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, model, cfg)
    return path


@pytest.fixture(scope="session")
def motorcycle_full():
    """The motorcycle pair as scikit-image ships it (741x500) with its ground truth: left, right, disparity, valid."""
    from ges_ros.sample import motorcycle
    return motorcycle()


@pytest.fixture(scope="session")
def motorcycle_small():
    """The motorcycle pair at half size (for speed) with matching calibration and GT."""
    import cv2
    from ges_ros.sample import MOTORCYCLE, PinholeStereo, motorcycle
    left, right, disp, valid = motorcycle()
    s = 0.5
    size = (int(left.shape[1] * s), int(left.shape[0] * s))
    l2 = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
    r2 = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
    d2 = cv2.resize(disp, size, interpolation=cv2.INTER_NEAREST) * s
    v2 = cv2.resize(valid.astype("uint8"), size, interpolation=cv2.INTER_NEAREST) > 0
    m = MOTORCYCLE
    cam = PinholeStereo(f=m.f * s, cx=(m.cx + 0.5) * s - 0.5, cy=(m.cy + 0.5) * s - 0.5, doffs=m.doffs * s,
                        baseline=m.baseline)
    return l2, r2, d2, v2, cam
