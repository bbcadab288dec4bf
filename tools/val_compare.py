"""Candidate weights side by side on the validation set, the way TRAINING.md's ablation rows are read: the pipeline
at the node's defaults (input_scale auto), at 4, 8 and 16 iterations, OpenCV SGBM in the same run (oracle range,
holes filled). Prints, per weights: the real-scene means (the synthetic scene left out), their ratio to SGBM, the
motorcycle pair, and each real scene's bad-2 beside SGBM's.

    python tools/val_compare.py runs/a.safetensors runs/b.safetensors [--iters 4,8,16] [--json OUT]
        [--precision bf16] [--int8-calibration generated|FOLDER]

Validation data only (../shared/data/stereo and the motorcycle pair): a choice aid, never a training signal.
"""
import argparse
import json
import warnings

from ges_core import load_predictor
from ges_core.data.datasets import build_dataset
from ges_core.evaluate import evaluate, mean_row, scored


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", default="../shared/data/stereo")
    ap.add_argument("--iters", default="4,8,16")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--int8-calibration", default="generated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    real = build_dataset("folder", args.data)
    moto = build_dataset("motorcycle", None)
    result = {}
    for w in args.weights:
        predictor = load_predictor(w, backend=args.backend, precision=args.precision,
                                   int8_calibration=args.int8_calibration)
        for iters in [int(i) for i in args.iters.split(",")]:
            rows = [r for r in scored(evaluate(real, predictor, iters=iters, baseline="sgbm", progress=False))
                    if "synthetic" not in str(r["scene"])]
            m = mean_row(rows)
            mo = mean_row(scored(evaluate(moto, predictor, iters=iters, baseline="sgbm", progress=False)))
            result[f"{w}@{iters}"] = {"real": rows, "real_mean": m, "motorcycle": mo}
            print(f"{w} [{predictor.runtime}] {iters} it: real {m['ges_epe']:.3f} / {m['ges_bad2']:.2f} "
                  f"(SGBM {m['sgbm_epe']:.3f} / {m['sgbm_bad2']:.2f}; ratio {m['ges_epe'] / m['sgbm_epe']:.2f} / "
                  f"{m['ges_bad2'] / m['sgbm_bad2']:.2f}) motorcycle {mo['ges_epe']:.3f} / {mo['ges_bad2']:.2f} "
                  f"(SGBM {mo['sgbm_bad2']:.2f})", flush=True)
            if iters == 4:
                print("   bad-2 per scene (GES/SGBM): " + ", ".join(
                    f"{str(r['scene']).split('/')[-1]} {r['ges_bad2']:.2f}/{r['sgbm_bad2']:.2f}" for r in rows),
                    flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
