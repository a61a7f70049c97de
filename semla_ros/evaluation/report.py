"""Markdown tables of evaluation results (mIoU in %, one row per method, h-mean last)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from .metrics import harmonic_mean


def _cell(v: float, best: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    text = f"{100 * v:.1f}"
    return f"**{text}**" if best else text


def miou_table(rows: Mapping[str, Mapping[str, float]], domains: Sequence[str], exclude: Sequence[str] = (),
               bold_best: bool = True) -> str:
    """rows: label -> domain -> mIoU (0..1). Columns: domains, then the h-mean over non-excluded ones."""
    hmeans = {label: harmonic_mean(per, exclude) for label, per in rows.items()}
    cols = list(domains)
    best = {}
    for d in cols:
        vals = [per.get(d, math.nan) for per in rows.values()]
        vals = [v for v in vals if v is not None and not math.isnan(v)]
        best[d] = max(vals) if vals else None
    hm_vals = [v for v in hmeans.values() if not math.isnan(v)]
    best_h = max(hm_vals) if hm_vals else None
    head_cols = [f"{d}{'*' if d in exclude else ''}" for d in cols]
    lines = ["| method | " + " | ".join(head_cols) + " | h-mean |",
             "|---|" + "---:|" * (len(cols) + 1)]
    for label, per in rows.items():
        cells = [_cell(per.get(d, math.nan), bold_best and per.get(d) is not None and per.get(d) == best[d])
                 for d in cols]
        h = hmeans[label]
        cells.append(_cell(h, bold_best and best_h is not None and h == best_h))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
