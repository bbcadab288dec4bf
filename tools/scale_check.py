"""Scale robustness on the validation set, for choosing between weights: every real scene (and the motorcycle pair)
upsampled by a factor (bicubic; ground truth scaled and resampled nearest), each weights file at the node's default
4 iterations beside OpenCV SGBM with an oracle range. Prints one row per scene and the means.

    python tools/scale_check.py [--factor 2] WEIGHTS [WEIGHTS ...]

Validation data only (../shared/data/stereo): a choice aid, never a training signal.
"""
import argparse
import warnings

import cv2
import numpy as np

from ges_core import load_predictor
from ges_core.baselines import sgbm_disparity
from ges_core.data.datasets import MotorcycleDataset, build_dataset
from ges_core.metrics import disparity_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--data", default="../shared/data/stereo")
    args = ap.parse_args()
    ds = build_dataset("folder", args.data)
    scenes = [(ds.names[i], ds[i]) for i in range(len(ds)) if "synthetic" not in ds.names[i]]
    scenes.append(("motorcycle", MotorcycleDataset()[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # weights without a learned solver: the fallback warning
        preds = [load_predictor(w) for w in args.weights]
    f = args.factor
    print("| scene | " + " | ".join(f"{w} EPE | {w} bad-2" for w in args.weights) + " | SGBM EPE | SGBM bad-2 |")
    print("|---" * (2 + 2 * len(preds) + 1) + "|")
    rows = []
    for name, s in scenes:
        h, w = s["left"].shape[:2]
        size = (int(round(w * f)), int(round(h * f)))
        left = cv2.resize(s["left"], size, interpolation=cv2.INTER_CUBIC)
        right = cv2.resize(s["right"], size, interpolation=cv2.INTER_CUBIC)
        gt = cv2.resize(s["disparity"].astype(np.float32), size, interpolation=cv2.INTER_NEAREST) * f
        valid = cv2.resize(s["valid"].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        row = []
        for p in preds:
            r = p.predict(left, right, iters=4)
            m = disparity_metrics(np.where(r.valid, r.disparity, 0), gt, valid)
            row += [m["epe"], m["bad2"]]
        sg = disparity_metrics(sgbm_disparity(left, right, max_disp=int(np.ceil(gt[valid].max()))), gt, valid)
        row += [sg["epe"], sg["bad2"]]
        rows.append(row)
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in row) + " |", flush=True)
    print("| mean | " + " | ".join(f"{x:.3f}" for x in np.mean(rows, axis=0)) + " |")


if __name__ == "__main__":
    main()
