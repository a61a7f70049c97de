"""`semla-eval`: the SemLA benchmark protocol on folder datasets, and the demo-world table.

    semla-eval run --data DIR --model CFG --checkpoint W --library [LABEL=]LIB [...] --out OUT
    semla-eval export-demo OUT [--images-per-domain N]
    semla-eval demo [--out docs]     # the README table: demo assets, standard vs rrqr libraries
    semla-eval demo --compare-training [--seeds 250 251 252]   # standard LoRA vs RecycleLoRA vs FISA

`run` writes OUT/results.json (everything, per image too), OUT/results.md (the mIoU table) and
OUT/figures/*.png (support vs mIoU, adapter contributions). Methods and leave-one-out are
described in semla_ros/evaluation/protocol.py; the dataset format in
semla_ros/evaluation/dataset.py; the demo table in semla_ros/demo/eval_table.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.fields import add_options, option_values
from ..core.output_paths import check_input_folder, check_output_folder
from ..core.settings import SegmenterSettings
from ..demo.training_table import DEFAULT_SEEDS
from ..engine.spec import OFFLINE_DEFAULTS, EngineSpec
from ..evaluation.protocol import METHODS, ProtocolSettings
from ..training.loop import LOSSES, LoopSettings
from .ending import run_command

# What the protocol replays does not depend on the cache size and embedding rate.
NOT_REPLAYED = ("embed_every_n", "embed_rest_every_n", "adapter_cache_mb")
ENGINE_OPTIONS = ("checkpoint", "allow_random_weights", "navigator", "device", "sliding_window")


def _protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    add_options(p, ProtocolSettings)                             # leave-one-out, rate, image count
    add_options(p, SegmenterSettings, exclude=NOT_REPLAYED)      # retrieval and the node's debouncing
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
    r.add_argument("--library", action="append", default=[], metavar="[LABEL=]DIR",
                   help="adapter library; repeat with labels to compare libraries (e.g. std=A rrqr=B)")
    r.add_argument("--adapter-for", action="append", default=[], metavar="DOMAIN=ADAPTER",
                   help="the target adapter of a domain when its name differs from the domain's")
    add_options(r, EngineSpec, only=ENGINE_OPTIONS, overrides=OFFLINE_DEFAULTS)
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
    d.add_argument("--seed", type=int, default=LoopSettings.seed)
    d.add_argument("--loss", choices=LOSSES, default="ce",
                   help="adapter loss for std/rrqr; ce matches how the demo base model was trained")
    d.add_argument("--cache-dir", type=Path, default=None, help="demo asset cache")
    d.add_argument("--test-budget", action="store_true", help="tiny demo assets (what the tests use)")
    d.add_argument("--no-train", action="store_true", help="only the demo build's library (no std/rrqr)")
    d.add_argument("--render-only", type=Path, default=None, metavar="RENDER_JSON",
                   help="rewrite evaluation.md/json from a previous run's render.json (no computation); with "
                        "--compare-training, its section from the work folder's training_comparison.json")
    d.add_argument("--compare-training", action="store_true",
                   help="instead: standard LoRA vs RecycleLoRA vs the FISA profile, one library per method and "
                        "seed, as a section of evaluation.md (semla_ros/demo/training_table.py)")
    d.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="--compare-training: training seeds (LoRA init and batch order)")
    _protocol_args(d)
    return parser


def settings_from(args) -> ProtocolSettings:
    segmenter = SegmenterSettings(**option_values(args, SegmenterSettings, exclude=NOT_REPLAYED))
    return ProtocolSettings(methods=tuple(args.methods), segmenter=segmenter,
                            **option_values(args, ProtocolSettings))


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


def cmd_run(args) -> int:
    from ..engine import build_engine
    from ..evaluation.dataset import open_dataset
    from ..evaluation.protocol import CachedNavigator
    from ..evaluation.report import evaluate_libraries, write_outputs

    settings = settings_from(args)
    libraries = _libraries(args.library)
    for path in libraries.values():                  # before the model loads and any image is read
        check_input_folder(path, "--library")
    check_output_folder(args.out, "--out", [args.data, *libraries.values()])
    domains = open_dataset(args.data, args.domains)
    classes = tuple(next(iter(domains.values())).classes)
    spec = EngineSpec(model_config=args.model, classes=classes, settings=settings.segmenter,
                      backend="torch",   # the protocol's reference numbers come from the PyTorch model
                      **option_values(args, EngineSpec, only=ENGINE_OPTIONS))
    build = build_engine(spec).raise_for_errors()
    navigator = CachedNavigator(build.navigator)
    start = time.monotonic()
    results = evaluate_libraries(build.predictor, navigator, domains, libraries, settings,
                                 _pairs(args.adapter_for, "--adapter-for"), quiet=args.quiet)
    summary = write_outputs(results, args.out, args.exclude_from_hmean)
    print(summary["table"])
    skipped = list(dict.fromkeys(s for r in results.values() for s in r.skipped))
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s) (listed in results.json), e.g. {skipped[0][0]}: "
              f"{skipped[0][1]}")
    print(f"wrote {args.out}/results.json, results.md, figures/ in {time.monotonic() - start:.0f} s")
    return 0


def cmd_export_demo(args) -> int:
    from ..demo import world
    from ..demo.export import HELD_OUT_SEED_BASE, export_demo_world

    root = export_demo_world(args.out, tuple(args.domains or world.DOMAINS), args.images_per_domain,
                             HELD_OUT_SEED_BASE if args.seed_base is None else args.seed_base)
    print(f"wrote {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("semla-eval", evaluate, argv)


def evaluate(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv)   # recorded with the results they produce
    if args.command == "run":
        return cmd_run(args)
    if args.command == "export-demo":
        return cmd_export_demo(args)
    from ..demo.eval_table import run_demo_table

    return run_demo_table(args, settings_from(args))

if __name__ == "__main__":
    sys.exit(main())
