"""Scale robustness on the validation set: every real scene (and the motorcycle pair) upsampled by each factor
(bicubic; ground truth scaled and resampled nearest), run through the pipeline the node runs (4 iterations), beside
OpenCV SGBM with an oracle range.

    python tools/scale_check.py [--factors 1,2,3] [--settings auto,1] [--weights W ...] [--json OUT]

A setting is `auto` (the defaults: input_scale auto), a number (a fixed input_scale) or `auto@PIXELS` (auto aiming
at another network pixel count: the study that chose the weights' preferred_pixels). Errors are given in the
upsampled image's pixels (EPE, bad-2) and in the scene's own pixels (EPE / f, bad at 2 f px: an upsampled pair holds
no more detail than the original, so these are comparable with the 1x numbers). Invalid pixels count as errors of
|gt| (a dense evaluation). Validation data only (../shared/data/stereo): a choice aid, never a training signal.
"""
import argparse
import json
import warnings

import cv2
import numpy as np

from ges_core import load_predictor
from ges_core.baselines import sgbm_disparity
from ges_core.data.datasets import MotorcycleDataset, build_dataset
from ges_core.pipeline import PipelineParams, StereoPipeline


def setting_params(setting: str) -> PipelineParams:
    if setting.startswith("auto@"):
        return PipelineParams(iters=4, input_scale="auto", preferred_pixels=int(float(setting[5:])))
    return PipelineParams(iters=4, input_scale=setting)


def errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, factor: float):
    err = np.abs(np.where(np.isfinite(pred), pred, 0.0) - gt)[valid]
    return [float(err.mean()), float((err > 2).mean() * 100), float(err.mean() / factor),
            float((err > 2 * factor).mean() * 100)]


def scenes(data: str):
    ds = build_dataset("folder", data)
    out = [(ds.names[i], ds[i]) for i in range(len(ds)) if "synthetic" not in ds.names[i]]
    out.append(("motorcycle", MotorcycleDataset()[0]))
    return out


def upsampled(s, f: float):
    h, w = s["left"].shape[:2]
    if f == 1:
        return s["left"], s["right"], s["disparity"].astype(np.float32), s["valid"]
    size = (int(round(w * f)), int(round(h * f)))
    left = cv2.resize(s["left"], size, interpolation=cv2.INTER_CUBIC)
    right = cv2.resize(s["right"], size, interpolation=cv2.INTER_CUBIC)
    gt = cv2.resize(s["disparity"].astype(np.float32), size, interpolation=cv2.INTER_NEAREST) * f
    valid = cv2.resize(s["valid"].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return left, right, gt, valid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["default"])
    ap.add_argument("--factors", default="1,2,3")
    ap.add_argument("--settings", default="auto,1")
    ap.add_argument("--data", default="../shared/data/stereo")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"])
    ap.add_argument("--no-sgbm", action="store_true")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    factors = [float(x) for x in args.factors.split(",")]
    settings = args.settings.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # weights without a learned solver: the fallback warning
        preds = {w: load_predictor(w, backend=args.backend) for w in args.weights}
    columns = [(w, st) for w in args.weights for st in settings] + ([] if args.no_sgbm else [("SGBM", "oracle")])
    rows = []
    data = scenes(args.data)
    for f in factors:
        print(f"\n### factor {f:g}\n")
        print("| scene | " + " | ".join(f"{w} {st}: EPE / bad-2 / native EPE / native bad-2 / scale"
                                       for w, st in columns) + " |")
        print("|---" * (1 + len(columns)) + "|")
        for name, s in data:
            left, right, gt, valid = upsampled(s, f)
            cells = []
            for w, st in columns:
                if w == "SGBM":
                    d = sgbm_disparity(left, right, max_disp=int(np.ceil(gt[valid].max())))
                    e, scale = errors(d, gt, valid, f), 1.0
                else:
                    r = StereoPipeline(preds[w], setting_params(st)).run(left, right)
                    e, scale = errors(np.where(r.valid, r.disparity, 0), gt, valid, f), r.scale
                rows.append({"factor": f, "scene": name, "weights": w, "setting": st, "epe": e[0], "bad2": e[1],
                             "native_epe": e[2], "native_bad2": e[3], "scale": scale,
                             "pixels": int(left.shape[0] * left.shape[1])})
                cells.append(" / ".join(f"{x:.2f}" for x in e) + f" / {scale:.3g}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        means = []
        for w, st in columns:
            part = [r for r in rows if r["factor"] == f and r["weights"] == w and r["setting"] == st]
            means.append(" / ".join(f"{np.mean([r[k] for r in part]):.3f}"
                                    for k in ("epe", "bad2", "native_epe", "native_bad2")) + " / -")
        print("| mean | " + " | ".join(means) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
