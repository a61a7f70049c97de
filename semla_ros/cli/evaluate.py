"""`semla-eval`: the SemLA benchmark protocol on folder datasets, and the demo-world table.

    semla-eval run --data DIR --model CFG --checkpoint W --library [LABEL=]LIB [...] --out OUT
    semla-eval export-demo OUT [--images-per-domain N]
    semla-eval demo [--out docs]     # the README table: demo assets, standard vs rrqr libraries

`run` writes OUT/results.json (everything, per image too), OUT/results.md (the mIoU table) and
OUT/figures/*.png (support vs mIoU, adapter contributions). Methods and leave-one-out are
described in semla_ros/evaluation/protocol.py; the dataset format in
semla_ros/evaluation/dataset.py.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ..evaluation.protocol import LIBRARY_METHODS, METHODS, ProtocolSettings


def _protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--leave-one-out", dest="leave_one_out", action="store_true", default=True,
                   help="remove the target domain's own adapter from uniform/semla/debounced (default)")
    p.add_argument("--no-leave-one-out", dest="leave_one_out", action="store_false")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    p.add_argument("--ema-alpha", type=float, default=0.1)
    p.add_argument("--switch-threshold", type=float, default=0.5)
    p.add_argument("--threshold-mode", choices=("relative", "absolute"), default="relative")
    p.add_argument("--min-consecutive", type=int, default=3)
    p.add_argument("--cooldown-s", type=float, default=5.0)
    p.add_argument("--warmup-frames", type=int, default=1)
    p.add_argument("--rate-hz", type=float, default=10.0, help="replay clock of semla-debounced")
    p.add_argument("--max-images", type=int, default=None, help="per domain, the first N in file order")
    p.add_argument("--exclude-from-hmean", nargs="*", default=[], metavar="DOMAIN",
                   help="domains left out of the harmonic mean (e.g. the source domain)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-eval", description="SemLA evaluation protocol.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate methods on a folder dataset")
    r.add_argument("--data", type=Path, required=True, help="dataset root: classes.txt + <domain>/{images,labels}")
    r.add_argument("--domains", nargs="+", default=None, help="subset / order of domains (default: all, sorted)")
    r.add_argument("--model", required=True, help="registry name or CatSegConfig JSON")
    r.add_argument("--checkpoint", default=None)
    r.add_argument("--allow-random-weights", action="store_true")
    r.add_argument("--library", action="append", default=[], metavar="[LABEL=]DIR",
                   help="adapter library; repeat with labels to compare libraries (e.g. std=A rrqr=B)")
    r.add_argument("--adapter-for", action="append", default=[], metavar="DOMAIN=ADAPTER",
                   help="the target adapter of a domain when its name differs from the domain's")
    r.add_argument("--navigator", default="tower", help="'tower' or 'openclip:ViT-L-14/openai'")
    r.add_argument("--device", default="cpu")
    r.add_argument("--sliding-window", action="store_true", help="SemLA's sliding-window inference path")
    r.add_argument("--out", type=Path, required=True)
    _protocol_args(r)

    e = sub.add_parser("export-demo", help="write the demo world in the dataset format")
    e.add_argument("out", type=Path)
    e.add_argument("--images-per-domain", type=int, default=24)
    e.add_argument("--domains", nargs="+", default=None)
    e.add_argument("--seed-base", type=int, default=None, help="default: the demo's held-out seeds")

    d = sub.add_parser("demo", help="the demo-world table: demo assets + standard and rrqr libraries")
    d.add_argument("--out", type=Path, default=Path("docs"), help="writes evaluation.md and figures/ here")
    d.add_argument("--work", type=Path, default=None, help="datasets, libraries, raw results (default: cache)")
    d.add_argument("--images-per-domain", type=int, default=24, help="held-out test images per domain")
    d.add_argument("--train-images", type=int, default=None, help="per adapter (default: the demo build's)")
    d.add_argument("--steps", type=int, default=None, help="adapter training steps (default: the demo build's)")
    d.add_argument("--lr", type=float, default=None, help="adapter LR (default: the demo build's)")
    d.add_argument("--batch-size", type=int, default=None)
    d.add_argument("--seed", type=int, default=250)
    d.add_argument("--loss", choices=("bce", "ce"), default="ce",
                   help="adapter loss for std/rrqr; ce matches how the demo base model was trained")
    d.add_argument("--cache-dir", type=Path, default=None, help="demo asset cache")
    d.add_argument("--test-budget", action="store_true", help="tiny demo assets (what the tests use)")
    d.add_argument("--no-train", action="store_true", help="only the demo build's library (no std/rrqr)")
    d.add_argument("--render-only", type=Path, default=None, metavar="RENDER_JSON",
                   help="rewrite evaluation.md/json from a previous run's render.json (no computation)")
    _protocol_args(d)
    return parser


def settings_from(args) -> ProtocolSettings:
    return ProtocolSettings(methods=tuple(args.methods), leave_one_out=args.leave_one_out, top_k=args.top_k,
                            temperature=args.temperature, metric=args.metric, ema_alpha=args.ema_alpha,
                            switch_threshold=args.switch_threshold, threshold_mode=args.threshold_mode,
                            min_consecutive=args.min_consecutive, cooldown_s=args.cooldown_s,
                            warmup_frames=args.warmup_frames, rate_hz=args.rate_hz,
                            max_images=args.max_images).validated()


def _pairs(specs, what) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{what} {spec!r} must look like KEY=VALUE")
        out[key] = value
    return out


def _libraries(specs) -> dict[str, Path]:
    libs = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = Path(spec).name or "library", spec
        if label in libs:
            raise ValueError(f"library label {label!r} given twice")
        libs[label] = Path(path)
    return libs


def evaluate(predictor, navigator, domains, libraries: dict[str, Path], settings: ProtocolSettings,
             adapter_for=None, quiet=False, model=None) -> dict:
    """Runs zero-shot once and the library methods per library. Returns {label: EvaluationResult}."""
    from tqdm import tqdm

    from ..core.library import AdapterLibrary
    from ..evaluation.protocol import Evaluator

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
    results = {}
    with tqdm(total=total, desc="semla-eval", unit="img", disable=quiet) as bar:
        for label, path, methods in runs:
            library = None
            if path is not None:
                library = AdapterLibrary.open(path, navigator_dim=navigator.dim, navigator_id=navigator.id,
                                              model=model if model is not None else predictor.model)
                if library.skipped:
                    print(f"warning: {path}: skipped {library.skipped}", file=sys.stderr)
            bar.set_description(f"semla-eval {label}")
            ev = Evaluator(predictor, library, navigator, ProtocolSettings(**{**settings.__dict__, "methods": methods}),
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
    from ..evaluation import figures
    from ..evaluation.metrics import harmonic_mean
    from ..evaluation.report import miou_table

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
        default=_json_default))
    summary["table"] = md
    return summary


def support_detail(records, zero_shot_records, method: str) -> dict:
    """Is the support score a confidence? Rank correlation with mIoU within each domain (the pooled
    number mixes domains of different difficulty) and with the gain over the base model per image."""
    from ..evaluation.figures import spearman

    rows = [r for r in records if r.method == method and math.isfinite(r.support)]
    within = {}
    for d in dict.fromkeys(r.domain for r in rows):
        own = [r for r in rows if r.domain == d]
        within[d] = spearman([r.support for r in own], [r.miou for r in own])
    base = {(r.domain, r.stem): r.miou for r in zero_shot_records}
    paired = [(r.support, r.miou - base[(r.domain, r.stem)]) for r in rows if (r.domain, r.stem) in base]
    gain = spearman(*zip(*paired)) if paired else math.nan
    return {"within_domain": within, "vs_gain_over_zero_shot": gain,
            "mean_support": {d: float(sum(r.support for r in rows if r.domain == d) /
                                      max(1, sum(1 for r in rows if r.domain == d))) for d in within}}


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def cmd_run(args) -> int:
    from ..catseg.predictor import CatSegPredictor
    from ..evaluation.dataset import open_dataset
    from ..evaluation.models import CachedNavigator, load_model, make_navigator

    settings = settings_from(args)
    libraries = _libraries(args.library)
    domains = open_dataset(args.data, args.domains)
    model = load_model(args.model, args.checkpoint, args.device, allow_random=args.allow_random_weights)
    classes = list(next(iter(domains.values())).classes)
    predictor = CatSegPredictor(model, classes, device=args.device, sliding_window=args.sliding_window)
    navigator = CachedNavigator(make_navigator(args.navigator, model, args.device))
    start = time.monotonic()
    results = evaluate(predictor, navigator, domains, libraries, settings, _pairs(args.adapter_for, "--adapter-for"),
                       quiet=args.quiet)
    summary = write_outputs(results, args.out, args.exclude_from_hmean)
    print(summary["table"])
    print(f"wrote {args.out}/results.json, results.md, figures/ in {time.monotonic() - start:.0f} s")
    return 0


def cmd_export_demo(args) -> int:
    from ..demo import world
    from ..evaluation.demo_export import HELD_OUT_SEED_BASE, export_demo_world

    root = export_demo_world(args.out, tuple(args.domains or world.DOMAINS), args.images_per_domain,
                             HELD_OUT_SEED_BASE if args.seed_base is None else args.seed_base)
    print(f"wrote {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "export-demo":
            return cmd_export_demo(args)
        from ..evaluation.demo_table import run_demo_table

        return run_demo_table(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
