"""`ges bench accuracy`: the weights on the validation scenes beside SGBM, per iteration count.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from .common import machine_line, md_table


# ------------------------------------------------------------------------------ accuracy
def _is_synthetic(row: Dict[str, object]) -> bool:
    return "synthetic" in str(row.get("scene", "")).lower()


def _runtime_rows(args, sets, pred) -> List[str]:
    """The same weights, solver and iterations on each runtime this machine has (torch fp32; the openvino
    backend's fp32 and bf16 where OpenVINO is installed), beside the one measured above: what changing the runtime
    costs in accuracy."""
    from .. import load_predictor
    from ..config import GESConfig
    from ..evaluate import evaluate, scored
    from ..ov_backend import openvino_available
    if str(args.weights).lower().endswith(".onnx") or args.device != "cpu":
        return []
    runtimes = [("torch", "auto")] + ([("openvino", "fp32"), ("openvino", "bf16")] if openvino_available() else [])
    rows = []
    for backend, precision in runtimes:
        other = load_predictor(args.weights, device=args.device, solver=pred.solver, backend=backend,
                               precision=precision)
        cells = []
        for _, _, ds in sets:
            got = [r for r in scored(evaluate(ds, other, iters=GESConfig.iters, progress=False))
                   if not _is_synthetic(r)]
            cells += [f"{np.mean([r['ges_epe'] for r in got]):.3f}", f"{np.mean([r['ges_bad2'] for r in got]):.2f}"]
        rows.append([other.runtime + (" (above)" if other.runtime == pred.runtime else ""), *cells])
        print(f"accuracy runtime {other.runtime}: {cells}", flush=True)
    head = ["runtime"] + sum(([f"{k} EPE (px)", f"{k} bad-2 (%)"] for k, _, _ in sets), [])
    return [f"### The same weights on each runtime ({pred.solver}, {GESConfig.iters} iterations)", "",
            "bf16 runs where the CPU has it (AMX or AVX-512 BF16); elsewhere OpenVINO runs fp32 and says so.", "",
            md_table(head, rows), ""]


def bench_accuracy(args) -> str:
    """GES beside SGBM on the validation scenes (real ones averaged, synthetic ones reported apart) and the
    motorcycle pair, and both against the solver's iteration count."""
    from .. import load_predictor
    from ..config import GESConfig
    from ..data.datasets import MotorcycleDataset, build_dataset
    from ..evaluate import evaluate, format_table, mean_row, scored
    # the node's defaults are the core's inference defaults (ges_ros.params reads them from GESConfig)
    pred = load_predictor(args.weights, device=args.device, solver=args.solver or GESConfig.solver,
                          backend=args.backend, precision=args.precision)
    sets = [("motorcycle", "motorcycle (scikit-image, Middlebury 2014, quarter size)", MotorcycleDataset())]
    if args.data and Path(args.data).is_dir():
        sets.insert(0, ("scenes", f"scene folders of {args.data}", build_dataset("folder", args.data)))
    body = ["## accuracy — shipped weights beside OpenCV SGBM on real scenes", "",
            f"{machine_line()}; weights {args.weights} (solver {pred.solver}, {GESConfig.iters} iterations, the node's "
            "default; runtime {runtime}); SGBM: OpenCV StereoSGBM 3-way, block 5, P1/P2 = 8/32 x block^2, "
            "uniqueness 10, speckle 100/2, "
            "searching up to the scene's largest true disparity (an oracle range, SGBM's best case) with holes filled "
            "from the background side. Metrics over all pixels with ground truth; ratio = GES / SGBM. Means over the "
            "real scenes; synthetic scenes are listed apart and left out of the means.", ""]
    record = {"weights": str(args.weights), "iters": GESConfig.iters, "solver": pred.solver}
    groups: Dict[str, List[Dict[str, object]]] = {}
    for key, title, ds in sets:
        rows = scored(evaluate(ds, pred, iters=GESConfig.iters, baseline="sgbm", progress=False))
        real = [r for r in rows if not _is_synthetic(r)]
        synthetic = [r for r in rows if _is_synthetic(r)]
        body += [f"### {title}", "", format_table(real, baseline=True), ""]
        if synthetic:
            body += ["Synthetic (not in the mean):", "", format_table(synthetic, baseline=True), ""]
        for name, part in ((key if key == "motorcycle" else "scenes_mean", real), ("synthetic", synthetic)):
            if not part:
                continue
            m = mean_row(part)
            print(f"accuracy {name}: GES EPE {m['ges_epe']:.3f} bad-2 {m['ges_bad2']:.2f} | SGBM EPE "
                  f"{m['sgbm_epe']:.3f} bad-2 {m['sgbm_bad2']:.2f}", flush=True)
            record[name] = {k: round(float(m[k]), 4) for k in ("ges_epe", "ges_bad2", "sgbm_epe", "sgbm_bad2")}
            record[name]["beats_sgbm_bad2"] = bool(m["ges_bad2"] < m["sgbm_bad2"])
            record[name]["scenes"] = len(part)
        groups[key] = real
    # against the iteration count: the anytime property (no worse with more iterations)
    rows = []
    for iters in args.iters_list:
        cells = [iters]
        for key, _, ds in sets:
            got = [r for r in scored(evaluate(ds, pred, iters=iters, progress=False)) if not _is_synthetic(r)]
            cells += [f"{np.mean([r['ges_epe'] for r in got]):.3f}", f"{np.mean([r['ges_bad2'] for r in got]):.2f}"]
        rows.append(cells)
        print(f"accuracy iterations {iters}: {cells[1:]}", flush=True)
    # the runtime (the openvino backend's precision) is known once a pair has run
    body[2] = body[2].replace("{runtime}", pred.runtime)
    if pred.backend != "torch":
        record["runtime"] = pred.runtime
    record["iterations"] = {str(r[0]): [float(c) for c in r[1:]] for r in rows}
    head = ["iterations"] + sum(([f"{k} EPE (px)", f"{k} bad-2 (%)"] for k, _, _ in sets), [])
    body += ["### EPE and bad-2 against solver iterations (real scenes' mean; motorcycle)", "",
             md_table(head, rows), "", *_runtime_rows(args, sets, pred),
             f"`ges bench accuracy --data {args.data}`"]
    if args.record:
        # what the shipped-weights test holds the weights to (test/test_weights.py)
        # its folder is made here: an error after the whole run once lost every number it had measured
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.record}")
    return "\n".join(body)
