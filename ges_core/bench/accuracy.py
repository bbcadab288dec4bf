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


def real_means(predictor, sets, iters: int) -> List[float]:
    """[EPE, bad-2] of the real scenes' mean per set (synthetic scenes left out), at the pipeline's defaults."""
    from ..evaluate import evaluate, scored
    values: List[float] = []
    for _, _, ds in sets:
        got = [r for r in scored(evaluate(ds, predictor, iters=iters, progress=False)) if not _is_synthetic(r)]
        values += [float(np.mean([r["ges_epe"] for r in got])), float(np.mean([r["ges_bad2"] for r in got]))]
    return values


def validation_sets(data) -> list:
    """(key, title, dataset): the scene folders of `data` when it is a folder, and the motorcycle pair."""
    from ..data.datasets import MotorcycleDataset, build_dataset
    sets = [("motorcycle", "motorcycle (scikit-image, Middlebury 2014, quarter size)", MotorcycleDataset())]
    if data and Path(data).is_dir():
        sets.insert(0, ("scenes", f"scene folders of {data}", build_dataset("folder", data)))
    return sets


def _runtime_rows(args, sets, pred) -> List[str]:
    """The same weights, solver and iterations on each runtime this machine has (torch fp32; the openvino
    backend's fp32, bf16, int8 and int8_bf16 where OpenVINO and NNCF are installed, int8 calibrated on generated
    pairs and, with --int8-calibration FOLDER, on those), beside the one measured above: what changing the runtime
    costs in accuracy, and whether int8 stays within its limits of float32 (the check auto's choice of int8 rests
    on: `ges operating-point --int8-check`)."""
    from .. import load_predictor
    from ..config import GESConfig
    from ..ov_backend import cpu_has_bf16, openvino_available
    from ..quantize import FLOAT_PARTS, GENERATED, INT8_BAD2_LIMIT, INT8_EPE_LIMIT, int8_passes, nncf_missing
    if str(args.weights).lower().endswith(".onnx") or args.device != "cpu":
        return []
    runtimes = [("torch", "auto", GENERATED)]
    if openvino_available():
        runtimes += [("openvino", "fp32", GENERATED), ("openvino", "bf16", GENERATED)]
        if not nncf_missing():
            folder = getattr(args, "int8_calibration", GENERATED)
            for precision in ("int8", "int8_bf16"):
                runtimes += [("openvino", precision, c) for c in dict.fromkeys([GENERATED, folder])]
    rows, measured = [], {}
    for backend, precision, calibration in runtimes:
        if precision.endswith("bf16") and not cpu_has_bf16():
            continue                      # OpenVINO would run fp32 and say so: the fp32 rows already show it
        other = load_predictor(args.weights, device=args.device, solver=pred.solver, backend=backend,
                               precision=precision, int8_calibration=calibration)
        values = real_means(other, sets, GESConfig.iters)
        name = other.runtime + (f", calibrated on {calibration}" if "int8" in precision else "")
        measured[(backend, precision, calibration)] = values
        check = ""
        if "int8" in precision:
            ref = measured.get(("openvino", FLOAT_PARTS[precision], GENERATED))
            check = ("within" if int8_passes(ref, values) else "outside") if ref else "-"
        rows.append([name + (" (above)" if other.runtime == pred.runtime and calibration == GENERATED else ""),
                     *(f"{v:.3f}" if i % 2 == 0 else f"{v:.2f}" for i, v in enumerate(values)), check])
        print(f"accuracy runtime {name}: {rows[-1][1:]}", flush=True)
    head = ["runtime"] + sum(([f"{k} EPE (px)", f"{k} bad-2 (%)"] for k, _, _ in sets), []) + [
        f"int8 within {INT8_EPE_LIMIT:g} % EPE / {INT8_BAD2_LIMIT:g} pt bad-2 of its float part"]
    return [f"### The same weights on each runtime ({pred.solver}, {GESConfig.iters} iterations)", "",
            "bf16 runs where the CPU has it (AMX or AVX-512 BF16); elsewhere OpenVINO runs fp32 and says so. int8: "
            "the three graphs quantized by NNCF (ges_core/quantize.py), the float rest in fp32 (int8) or bf16 "
            "(int8_bf16), compared with that float precision on every set.", "",
            md_table(head, rows), ""]


def bench_accuracy(args) -> str:
    """GES beside SGBM on the validation scenes (real ones averaged, synthetic ones reported apart) and the
    motorcycle pair, and both against the solver's iteration count."""
    from .. import load_predictor
    from ..config import GESConfig
    from ..evaluate import evaluate, format_table, mean_row, scored
    # the node's defaults are the core's inference defaults (ges_ros.params reads them from GESConfig)
    pred = load_predictor(args.weights, device=args.device, solver=args.solver or GESConfig.solver,
                          backend=args.backend, precision=args.precision)      # int8 (if auto takes it): generated
    sets = validation_sets(args.data)
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
