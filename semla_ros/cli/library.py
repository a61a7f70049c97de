"""`semla-library`: make, add, list, inspect and import SemLA adapter libraries.

    semla-library train DOMAIN_DIR --library LIB --model CFG --checkpoint W [--init recyclelora] [--profile fisa] ...
    semla-library add ADAPTER_DIR IMAGE_DIR --library LIB --name NAME --model CFG --checkpoint W
    semla-library list LIB
    semla-library inspect LIB [--deep [--model CFG]] [--map centroids.png] [--images NAME=DIR ...]
    semla-library import LORADB [--into LIB]
    semla-library gaps CAPTURE_DIR|RELABEL_OUT --library LIB [--out PROPOSALS] [--pseudo-labels --model CFG ...]

A library is a folder in the official SemLA `loradb/` layout (see semla_ros.core.library);
entries made here add a `metadata.json` (navigator id, training settings), which official tools
ignore.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core import library_report
from ..core.fields import positive_int
from ..core.library import AdapterLibrary
from ..core.output_paths import check_output_folder
from ..training.loop import LOSSES, LoopSettings
from ..training.lora import INITS, PROFILES, TrainSettings
from .ending import run_command

TRAIN, LOOP = TrainSettings(), LoopSettings()


def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required,
                   help="CAT-Seg config: registry name (tiny, vitb16_384, vitl14_336) or a CatSegConfig JSON")
    p.add_argument("--checkpoint", default=None, help="CAT-Seg weights (.pth or .safetensors)")
    p.add_argument("--allow-random-weights", action="store_true", help="smoke tests only: no checkpoint")
    p.add_argument("--navigator", default="tower",
                   help="'tower' (frozen copy of the model's image tower) or 'openclip:ViT-L-14/openai' (official)")
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-library", description="Manage SemLA LoRA adapter libraries.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one LoRA adapter on a domain folder and add it to a library")
    t.add_argument("domain_dir", type=Path, help="a domain folder: images/, labels/ and classes.txt here or above")
    t.add_argument("--library", type=Path, required=True)
    t.add_argument("--name", default=None, help="entry name (default: the domain folder's name)")
    _model_args(t)
    t.add_argument("--init", choices=INITS, default=TRAIN.init,
                   help="LoRA init: PEFT default; rrqr: one LoRA on pivoted-QR directions (training/rrqr.py); "
                        "recyclelora: RecycleLoRA's main (minor) + sub (major) adapters (training/recyclelora.py)")
    t.add_argument("--profile", choices=PROFILES, default=TRAIN.profile,
                   help="targets: SemLA's list, or fisa: frozen mask generator, semantic guidance in early CLIP "
                        "image blocks, a small set of CLIP image targets (training/fisa.py)")
    t.add_argument("--sub-rank", type=int, default=None,
                   help="rrqr/recyclelora: rank of the major-direction (sub) part, taken from --rank (default r/4)")
    t.add_argument("--sub-scale", type=float, default=TRAIN.sub_scale,
                   help="recyclelora: the sub adapter's scaling relative to the main adapter's")
    t.add_argument("--sub-lr-scale", type=float, default=TRAIN.sub_lr_scale,
                   help="recyclelora: the sub adapter's learning rate relative to --lr")
    t.add_argument("--rank", type=int, default=TRAIN.rank)
    t.add_argument("--alpha", type=float, default=TRAIN.alpha)
    t.add_argument("--steps", type=int, default=LOOP.steps)
    t.add_argument("--batch-size", type=int, default=LOOP.batch_size)
    t.add_argument("--lr", type=float, default=LOOP.lr)
    t.add_argument("--weight-decay", type=float, default=LOOP.weight_decay)
    t.add_argument("--warmup-steps", type=int, default=LOOP.warmup_steps)
    t.add_argument("--seed", type=int, default=LOOP.seed)
    t.add_argument("--loss", choices=LOSSES, default=LOOP.loss,
                   help="bce: the official loss; ce: cross-entropy, for base models trained with it (the demo's)")
    t.add_argument("--max-images", type=positive_int, default=None,
                   help="use the first N images in file order only (default: all)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing entry of that name")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    a = sub.add_parser("add", help="turn an existing PEFT LoRA adapter + an image folder into an entry")
    a.add_argument("adapter_dir", type=Path, help="folder with adapter_config.json + adapter_model.safetensors")
    a.add_argument("image_dir", type=Path, help="the domain's images (images/ subfolder or the folder itself)")
    a.add_argument("--library", type=Path, required=True)
    a.add_argument("--name", default=None, help="entry name (default: the adapter folder's name)")
    _model_args(a)
    a.add_argument("--overwrite", action="store_true")

    ls = sub.add_parser("list", help="entries, ranks, targets, navigators; and why any entry is skipped")
    ls.add_argument("library", type=Path)
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    i = sub.add_parser("inspect", help="centroid distances and a 2-D centroid map (PCA, like SemLA Fig. 7)")
    i.add_argument("library", type=Path)
    i.add_argument("--deep", action="store_true",
                   help="full check: read every adapter's factors (finite; with --model: fits and sane "
                        "against the model's weights) and print |dW| per entry; opening checks headers only")
    i.add_argument("--map", type=Path, default=None, help="write the centroid map PNG here")
    i.add_argument("--images", action="append", default=[], metavar="LABEL=DIR",
                   help="also embed these images (needs --model/--navigator) and plot them as dots")
    _model_args(i, required=False)

    im = sub.add_parser("import", help="validate an official SemLA loradb/ folder (and optionally copy it)")
    im.add_argument("loradb", type=Path)
    im.add_argument("--into", type=Path, default=None, help="copy the valid entries into this library")
    im.add_argument("--navigator-dim", type=int, default=None,
                    help="expected centroid dimension (768 for the official CLIP ViT-L/14 navigator)")
    im.add_argument("--model", default=None, help="optional: also check every target against this model config")
    im.add_argument("--checkpoint", default=None)
    im.add_argument("--overwrite", action="store_true")

    g = sub.add_parser("gaps", help="propose new entries from frames the library does not cover (a capture folder "
                                    "of the node's coverage monitor, or a semla-relabel job folder)")
    g.add_argument("source", type=Path, help="coverage capture folder, or a semla-relabel --out folder")
    g.add_argument("--library", type=Path, required=True)
    g.add_argument("--out", type=Path, default=None,
                   help="write each proposal as a domain folder here (images/, classes.txt, proposal.json)")
    g.add_argument("--cluster-scale", type=float, default=None, help="in units of the median centroid spacing")
    g.add_argument("--min-cluster-size", type=int, default=None)
    g.add_argument("--max-relative-distance", type=float, default=None,
                   help="relabel jobs: frames farther than this x the spacing from every adapter count as uncovered "
                        "(the node's coverage monitor's rule and window decide which of them form a gap)")
    g.add_argument("--pseudo-labels", action="store_true",
                   help="also write labels/ with the current model's masks (PSEUDO-labels, marked as such); capture "
                        "folders need --model/--checkpoint, relabel jobs use their own masks")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    _model_args(g, required=False)
    return parser


def _spec(args, **extra):
    """The engine the command line asks for (model, checkpoint, navigator, device)."""
    from ..engine import EngineSpec

    return EngineSpec(model_config=args.model, checkpoint=args.checkpoint or "",
                      allow_random_weights=args.allow_random_weights, navigator=args.navigator, device=args.device,
                      backend="torch",   # training, centroids and pseudo-labels use the PyTorch model only
                      **extra)


def _engine(args):
    """(model, navigator) from the command line, through the engine builder; raises on any error."""
    from ..engine import build_engine

    build = build_engine(_spec(args)).raise_for_errors()
    return build.predictor.model, build.navigator


def _print(lines) -> None:
    print("\n".join(lines))


def cmd_train(args) -> int:
    from ..training.entries import train_entry

    loop = LoopSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                        warmup_steps=args.warmup_steps, seed=args.seed, loss=args.loss)
    settings = TrainSettings(rank=args.rank, alpha=args.alpha, init=args.init, sub_rank=args.sub_rank,
                             sub_scale=args.sub_scale, sub_lr_scale=args.sub_lr_scale, profile=args.profile, loop=loop)
    made = train_entry(args.domain_dir, args.library, settings, lambda: _engine(args), name=args.name,
                       max_images=args.max_images, overwrite=args.overwrite, device=args.device,
                       show_progress=not args.quiet)
    print(made.summary())
    return 0


def cmd_add(args) -> int:
    from ..training.entries import add_entry

    made = add_entry(args.adapter_dir, args.image_dir, args.library, lambda: _engine(args), name=args.name,
                     overwrite=args.overwrite)
    print(made.summary())
    return 0


def cmd_list(args) -> int:
    lib = AdapterLibrary.open(args.library)
    if args.json:
        print(json.dumps(library_report.describe(lib), indent=2))
    else:
        _print(library_report.list_lines(lib))
    library_report.require_entries(lib)       # an empty listing is not a success
    return 0


def cmd_inspect(args) -> int:
    if args.images and not args.model:
        raise ValueError("--images needs --model (and --checkpoint) to embed them")
    if args.map is not None:
        check_output_folder(args.map.parent, "--map")
    lib = library_report.require_entries(AdapterLibrary.open(args.library))
    _print(library_report.distance_lines(lib))
    bad = library_report.deep_check(lib, _engine(args)[0] if args.model else None) if args.deep else 0
    if args.map is not None:
        _centroid_map(lib, args)
        print(f"wrote {args.map}")
    return 1 if bad else 0


def _centroid_map(lib: AdapterLibrary, args) -> None:
    """The centroids in 2-D (PCA), with the embeddings of `--images LABEL=DIR` folders as dots."""
    from ..evaluation import figures
    from ..evaluation.dataset import no_readable, open_domain

    samples = {}
    if args.images:
        _, navigator = _engine(args)
        for spec in args.images:
            label, _, path = spec.partition("=")
            folder = open_domain(path or label, require_labels=False)
            skipped: list = []
            images = list(folder.images(skipped=skipped))
            if not images:
                raise no_readable(folder.path, skipped)
            samples[label if path else folder.name] = navigator.embed(images)
    args.map.parent.mkdir(parents=True, exist_ok=True)
    figures.centroid_map(list(lib.names), lib.centroids, args.map, samples, title=f"{lib.root.name}: centroids (PCA)")


def cmd_import(args) -> int:
    if args.into is not None:
        check_output_folder(args.into, "--into", [args.loradb])
    model = None
    if args.model:
        from ..catseg.build import load_catseg

        model = load_catseg(args.model, args.checkpoint, allow_random_weights=args.checkpoint is None)
    lib = AdapterLibrary.open(args.loradb, navigator_dim=args.navigator_dim, model=model)
    _print(library_report.import_lines(args.loradb, lib, args.into, args.overwrite))
    if not lib.entries:
        return 2
    return 1 if lib.skipped else 0


def cmd_gaps(args) -> int:
    from ..core.coverage import CoverageSettings
    from ..relabel.cluster import ClusterSettings
    from ..relabel.gaps import find_gaps

    if not args.source.exists():
        raise ValueError(f"{args.source} does not exist; give a coverage capture folder or a semla-relabel --out")
    if args.out is not None:
        check_output_folder(args.out, "--out", [args.source])
    lib = library_report.require_entries(AdapterLibrary.open(args.library))
    cluster = ClusterSettings(args.cluster_scale or ClusterSettings.scale,
                              args.min_cluster_size or ClusterSettings.min_size)
    coverage = CoverageSettings()
    if args.max_relative_distance is not None:
        coverage = coverage.replace(max_relative_distance=args.max_relative_distance)
    report = find_gaps(args.source, lib, cluster, coverage,
                       args.out, args.pseudo_labels, _spec(args) if args.model else None)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print(report.lines())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("semla-library", library, argv)


def library(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = {"train": cmd_train, "add": cmd_add, "list": cmd_list, "inspect": cmd_inspect,
               "import": cmd_import, "gaps": cmd_gaps}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
