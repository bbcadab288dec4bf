"""`ges eval`: GES (and optionally OpenCV SGBM, in the same run) over a dataset, per scene and mean."""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Union

import numpy as np

from .baselines import sgbm_disparity
from .metrics import disparity_metrics

KEYS = ("epe", "bad1", "bad2", "bad3", "d1", "argo_bad3", "argo_bad5", "argo_bad10")


def evaluate(dataset, predictor, *, iters: Optional[int] = None, baseline: Optional[str] = None,
             progress: bool = True, scale: Union[str, float] = "auto") -> List[Dict[str, object]]:
    """One row per scene: GES metrics (all pixels and, where the dataset has a mask, non-occluded),
    runtime, and the same for the baseline when asked. GES runs through the pipeline the node runs (scale: its
    input_scale, "auto" by default), one scene at a time. SGBM searches up to the scene's largest true
    disparity (an oracle range, its best case) and fills its holes."""
    from tqdm import tqdm
    from .pipeline import PipelineParams, StereoPipeline
    params = PipelineParams(iters=iters or predictor.config.iters, input_scale=scale)
    rows: List[Dict[str, object]] = []
    for i in tqdm(range(len(dataset)), disable=not progress, desc="eval", unit="pair"):
        try:
            s = dataset[i]
        except (OSError, ValueError) as exc:
            # one unreadable scene must not cost the others their rows; the message names the file
            rows.append({"scene": _scene_name(dataset, i), "error": str(exc)})
            continue
        gt, valid = s["disparity"], s["valid"]
        row: Dict[str, object] = {"scene": s.get("name", str(i)), "size": f"{gt.shape[1]}x{gt.shape[0]}",
                                  "max_gt": float(gt[valid].max()) if valid.any() else 0.0}
        t = time.perf_counter()
        r = StereoPipeline(predictor, params).run(s["left"], s["right"])
        # a backend's one-off compile of a new size (openvino) is not the pair's inference time
        row["ges_ms"] = (time.perf_counter() - t) * 1e3 - r.timings_ms.get("compile", 0.0)
        row["iters"] = r.iters
        row["scale"] = r.scale
        pred = np.where(r.valid, r.disparity, 0)
        row.update(disparity_metrics(pred, gt, valid, prefix="ges_"))
        if "nonocc" in s:
            row.update(disparity_metrics(pred, gt, s["nonocc"], prefix="ges_noc_"))
        if baseline == "sgbm":
            t = time.perf_counter()
            d = sgbm_disparity(s["left"], s["right"], max_disp=int(np.ceil(max(row["max_gt"], 16))))
            row["sgbm_ms"] = (time.perf_counter() - t) * 1e3
            row.update(disparity_metrics(d, gt, valid, prefix="sgbm_"))
            if "nonocc" in s:
                row.update(disparity_metrics(d, gt, s["nonocc"], prefix="sgbm_noc_"))
        elif baseline is not None:
            raise ValueError(f"unknown baseline {baseline!r}; valid: ['sgbm']")
        rows.append(row)
    return rows


def _scene_name(dataset, index: int) -> str:
    names = getattr(dataset, "names", None)
    return str(names[index]) if names is not None and index < len(names) else str(index)


def scored(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """The rows that have metrics (a scene that could not be read has only `error`)."""
    return [r for r in rows if "error" not in r]


def mean_row(rows: List[Dict[str, object]]) -> Dict[str, object]:
    """Means over the scored rows (scenes with an error are left out)."""
    rows = scored(rows)
    out: Dict[str, object] = {"scene": "mean", "size": "", "scenes": len(rows)}
    if not rows:
        return out
    for k in rows[0]:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals and k not in ("scene", "size"):
            out[k] = float(np.mean(vals))
    return out


def format_table(rows: List[Dict[str, object]], *, baseline: bool) -> str:
    """Markdown table: per scene and mean, GES beside SGBM with their ratio."""
    head = ["scene", "size", "GES EPE", "GES bad-2 %", "GES ms"]
    if baseline:
        head += ["SGBM EPE", "SGBM bad-2 %", "SGBM ms", "EPE ratio", "bad-2 ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    good = scored(rows)
    for r in [*good, *([mean_row(rows)] if good else [])]:
        cells = [str(r["scene"]), str(r.get("size", "")), f"{r['ges_epe']:.2f}", f"{r['ges_bad2']:.1f}",
                 f"{r['ges_ms']:.0f}"]
        if baseline:
            cells += [f"{r['sgbm_epe']:.2f}", f"{r['sgbm_bad2']:.1f}", f"{r['sgbm_ms']:.0f}",
                      f"{r['ges_epe'] / max(r['sgbm_epe'], 1e-9):.2f}", f"{r['ges_bad2'] / max(r['sgbm_bad2'], 1e-9):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if "error" in r:
            lines.append(f"\nnot scored: {r['scene']}: {r['error']}")
    return "\n".join(lines)
