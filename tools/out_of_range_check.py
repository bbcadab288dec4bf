"""How many right pixels the out-of-range rule of input_scale auto throws away on the validation set: every scene at
each factor through the defaults, the probe's out-of-range mask against ground truth (right = within 2 px in the
scene's own pixels). Validation data only: a measurement, never a training signal.

    python tools/out_of_range_check.py [--factors 1,2,3]
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale_check import scenes, upsampled  # noqa: E402

from ges_core import load_predictor  # noqa: E402
from ges_core.pipeline import PipelineParams, StereoPipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", default="1,2,3")
    ap.add_argument("--data", default="../shared/data/stereo")
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = load_predictor("default", backend="torch")
    for f in (float(x) for x in args.factors.split(",")):
        total = invalidated = right = 0
        for name, s in scenes(args.data):
            left, right_img, gt, valid = upsampled(s, f)
            pipe = StereoPipeline(pred, PipelineParams(iters=4))
            res = pipe.run(left, right_img)
            # the probe the pipeline ran (deterministic for the same pair): the pixels the rule took away
            probe = pipe.probe(left, right_img, pipe.base_scale(*left.shape[:2]))
            taken = probe.out_of_range(res.scale, pipe.network_range) & valid & ~res.valid
            ok = np.abs(res.disparity - gt) <= 2 * f
            invalidated += int(taken.sum())
            right += int((taken & ok).sum())
            total += int(valid.sum())
            print(f"{f:g}x {name}: scale {res.scale:.3g}, invalidated {int(taken.sum())} pixels with ground truth, "
                  f"{int((taken & ok).sum())} of them right", flush=True)
        print(f"factor {f:g}: {invalidated} of {total} pixels with ground truth invalidated as out of range "
              f"({100 * invalidated / total:.3f} %), {right} of them right", flush=True)


if __name__ == "__main__":
    main()
