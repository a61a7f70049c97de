"""Running the protocol over several libraries, and its outputs: results.json, the Markdown mIoU table
(mIoU in %, one row per method, h-mean last), figures, and the support-score analysis."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from .metrics import harmonic_mean
from .protocol import LIBRARY_METHODS, Evaluator


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


def evaluate_libraries(predictor, navigator, domains, libraries: dict[str, Path], settings,
                       adapter_for=None, quiet=False) -> dict:
    """Runs zero-shot once and the library methods per library. Returns {label: EvaluationResult}."""
    import dataclasses

    from ..core.progress import progress_bar
    from ..engine.build import open_library

    n_images = sum(len(d) if settings.max_images is None else min(len(d), settings.max_images)
                   for d in domains.values())
    lib_methods = [m for m in settings.methods if m in LIBRARY_METHODS]
    runs = []
    if "zero-shot" in settings.methods:
        runs.append(("zero-shot", None, ("zero-shot",)))
    for label, path in libraries.items():
        if lib_methods:
            runs.append((label, path, tuple(lib_methods)))
    if lib_methods and not libraries:
        raise ValueError(f"methods {lib_methods} need --library")
    total = n_images * sum(len(methods) for _, _, methods in runs)
    opened = {}
    for label, path, _ in runs:                 # every library opened before the first image is read
        if path is not None:
            opened[label] = open_library(path, navigator, predictor.model)
            if opened[label].skipped:
                print(f"warning: {path}: skipped {opened[label].skipped}", file=sys.stderr)
    results = {}
    with progress_bar(total=total, desc="semla-eval", unit="img", quiet=quiet) as bar:
        for label, _, methods in runs:
            bar.set_description(f"semla-eval {label}")
            ev = Evaluator(predictor, opened.get(label), navigator, dataclasses.replace(settings, methods=methods),
                           adapter_for=adapter_for)
            results[label] = ev.run(domains, progress=bar.update)
    return results


def combined_rows(results: dict, single_library: bool) -> dict[str, dict[str, float]]:
    rows = {}
    for label, res in results.items():
        for method, per in res.miou_table().items():
            name = method if (label == "zero-shot" or single_library) else f"{method} [{label}]"
            rows[name] = per
    return rows


def write_outputs(results: dict, out: Path, exclude, title: str = "") -> dict:
    """results.json, results.md and figures; returns the summary dict."""
    from . import figures

    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    labels = [l for l in results if l != "zero-shot"]
    rows = combined_rows(results, single_library=len(labels) <= 1)
    domains = next(iter(results.values())).domains
    summary = {"title": title, "miou": rows, "hmean": {k: harmonic_mean(v, exclude) for k, v in rows.items()},
               "hmean_excludes": list(exclude), "figures": {}, "support_spearman": {}, "support_detail": {}}
    for label in labels:
        res = results[label]
        suffix = "" if len(labels) <= 1 else f"_{label}"
        for method in ("semla", "semla-debounced"):
            if method in res.methods and any(r.method == method for r in res.images):
                path = fig_dir / f"support_vs_miou_{method}{suffix}.png"
                rho = figures.support_vs_miou(res.images, path, method)
                summary["support_spearman"][f"{method}{suffix}"] = rho
                summary["support_detail"][f"{method}{suffix}"] = support_detail(
                    res.images, results["zero-shot"].images if "zero-shot" in results else [], method)
                summary["figures"][f"support_vs_miou_{method}{suffix}"] = str(path)
        if "semla" in res.contributions:
            path = fig_dir / f"contributions_semla{suffix}.png"
            figures.contributions(res.contributions["semla"], path,
                                  f"SemLA adapter contributions{f' ({label})' if suffix else ''}"
                                  f"{' (leave-one-out)' if res.settings['leave_one_out'] else ''}")
            summary["figures"][f"contributions_semla{suffix}"] = str(path)
    md = miou_table(rows, domains, exclude)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(
        {"summary": summary, "results": {k: v.to_json(exclude) for k, v in results.items()}}, indent=1,
        default=json_default))
    summary["table"] = md
    return summary


def support_detail(records, zero_shot_records, method: str) -> dict:
    """Is the support score a confidence? Rank correlation with mIoU within each domain (the pooled
    number mixes domains of different difficulty) and with the gain over the base model per image."""
    from .figures import spearman

    rows = [r for r in records if r.method == method and math.isfinite(r.support)]
    within = {}
    for d in dict.fromkeys(r.domain for r in rows):
        own = [r for r in rows if r.domain == d]
        within[d] = spearman([r.support for r in own], [r.miou for r in own])
    base = {(r.domain, r.stem): r.miou for r in zero_shot_records}
    paired = [(r.support, r.miou - base[(r.domain, r.stem)]) for r in rows if (r.domain, r.stem) in base]
    gain = spearman(*zip(*paired, strict=True)) if paired else math.nan
    return {"within_domain": within, "vs_gain_over_zero_shot": gain,
            "mean_support": {d: float(sum(r.support for r in rows if r.domain == d) /
                                      max(1, sum(1 for r in rows if r.domain == d))) for d in within}}


def json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ---------------------------------------------------------------------------------- sections other tools keep
# A generated doc may hold sections another command maintains (e.g. `semla-bench shifts --support-doc`
# in docs/evaluation.md), each between "<!-- NAME: begin -->" and "<!-- NAME: end -->" lines.
_SECTION = re.compile(r"<!-- (?P<name>[^>]*?): begin -->.*?<!-- (?P=name): end -->", re.S)


def kept_sections(text: str) -> str:
    """The marked sections of a doc, in order, so regenerating the rest of it keeps them."""
    return "\n\n".join(m.group(0) for m in _SECTION.finditer(text))


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` into the section `name` of `path` (appended the first time); the rest of the file stays."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    old = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block + "\n"
    path.write_text(new)
