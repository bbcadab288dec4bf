"""Validation EPE and bad-2 against training steps, from tools/val_compare.py's JSON files: one point per
(checkpoint, step), v5 and SGBM as lines. Writes a PNG (docs/TRAINING.md's v6 plot) and prints the table.

    python tools/plot_val_steps.py OUT.png --v5 0.815,5.78 --sgbm 1.201,9.29 \
        --point "stage 1 (distilled)"=600=runs/val_s1.json --point "stage 2"=1300=runs/val_s2.json

Each --point is LABEL=STEP=JSON; the JSON's 4-iteration real-scene means are plotted.
"""
import argparse
import json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--point", action="append", default=[], help="LABEL=STEP=val_compare.json")
    ap.add_argument("--v5", required=True, help="v5's EPE,bad-2 at 4 iterations")
    ap.add_argument("--sgbm", required=True, help="SGBM's EPE,bad-2 in the same runs")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {}
    for spec in args.point:
        label, step, path = spec.split("=", 2)
        runs = json.load(open(path))
        mean = next(v["real_mean"] for k, v in runs.items() if k.endswith("@4"))
        series.setdefault(label, []).append((int(step), mean["ges_epe"], mean["ges_bad2"]))
        print(f"{label} step {step}: EPE {mean['ges_epe']:.3f} bad-2 {mean['ges_bad2']:.2f}")
    v5 = [float(x) for x in args.v5.split(",")]
    sgbm = [float(x) for x in args.sgbm.split(",")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, (ax, name) in enumerate(zip(axes, ("EPE (px)", "bad-2 (%)"))):
        for label, points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1 + k] for p in points], marker="o", label=label)
        ax.axhline(v5[k], color="k", linestyle="--", label="v5 (shipped)")
        ax.axhline(sgbm[k], color="gray", linestyle=":", label="SGBM")
        ax.set_xlabel("training step of v6")
        ax.set_ylabel(name)
        ax.set_title(f"real validation scenes, 4 iterations: {name}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
