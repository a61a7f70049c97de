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
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..core.library import CONFIG_FILE, WEIGHTS_FILE, AdapterLibrary, load_entry
from ..training.lora import INITS, PROFILES, TrainSettings
from ..training.loop import LOSSES, LoopSettings

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
    t.add_argument("--max-images", type=int, default=None, help="use the first N images only")
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
                   help="relabel jobs: frames farther than this x the spacing from every adapter count as uncovered")
    g.add_argument("--pseudo-labels", action="store_true",
                   help="also write labels/ with the current model's masks (PSEUDO-labels, marked as such); capture "
                        "folders need --model/--checkpoint, relabel jobs use their own masks")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    _model_args(g, required=False)
    return parser


def _engine(args):
    """(model, navigator) from the command line, through the engine builder; raises on any error."""
    from ..engine import EngineSpec, build_engine

    spec = EngineSpec(model_config=args.model, checkpoint=args.checkpoint or "",
                      allow_random_weights=args.allow_random_weights, navigator=args.navigator, device=args.device,
                      backend="torch")   # only the PyTorch model and the navigator are used
    build = build_engine(spec).raise_for_errors()
    return build.predictor.model, build.navigator


def cmd_train(args) -> int:
    from tqdm import tqdm

    from ..evaluation.dataset import open_domain
    from ..training.lora import TrainSettings, base_model_id, domain_centroid, save_entry, train_adapter
    from ..training.loop import LoopSettings

    folder = open_domain(args.domain_dir)
    name = args.name or folder.name
    if (args.library / name).exists() and not args.overwrite:
        print(f"error: entry {args.library / name} exists (use --overwrite)", file=sys.stderr)
        return 2
    samples = folder.samples[: args.max_images] if args.max_images else folder.samples
    pairs = list(folder.pairs())[: len(samples)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    loop = LoopSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                        warmup_steps=args.warmup_steps, seed=args.seed, loss=args.loss)
    settings = TrainSettings(rank=args.rank, alpha=args.alpha, init=args.init, sub_rank=args.sub_rank,
                             sub_scale=args.sub_scale, sub_lr_scale=args.sub_lr_scale, profile=args.profile,
                             loop=loop).validated()
    model, navigator = _engine(args)
    bar = tqdm(total=loop.steps, desc=f"train {name} ({settings.init}, {settings.profile})", disable=args.quiet,
               leave=False)

    def progress(step, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    trained = train_adapter(model, folder.classes, images, labels, name, settings, progress=progress,
                            device=args.device)
    bar.close()
    centroid = domain_centroid(navigator, images)
    path = save_entry(trained, args.library, centroid, {
        "navigator": navigator.id, "domain": folder.name, "classes": list(folder.classes),
        "data": str(folder.path), "base_model": base_model_id(model)}, overwrite=args.overwrite)
    entry = load_entry(path, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
    print(f"wrote {path}: {len(entry.modules)} target modules, r={entry.rank}, scaling {entry.scaling:g}, "
          f"{trained.trainable_parameters} trainable parameters, "
          f"loss {trained.losses[0]:.4f} -> {trained.losses[-1]:.4f} in {trained.seconds:.0f} s")
    return 0


def cmd_add(args) -> int:
    from ..core.library import InvalidEntryError, read_adapter, write_entry
    from ..evaluation.dataset import open_domain
    from ..training.lora import base_model_id, domain_centroid

    src = args.adapter_dir
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / f).is_file():
            hint = " (convert adapter_model.bin with safetensors first)" if f == WEIGHTS_FILE and \
                (src / "adapter_model.bin").is_file() else ""
            print(f"error: {src / f} not found{hint}", file=sys.stderr)
            return 2
    name = args.name or src.name
    target = args.library / name
    if target.exists() and not args.overwrite:
        print(f"error: entry {target} exists (use --overwrite)", file=sys.stderr)
        return 2
    try:
        factors, alpha, rslora = read_adapter(src)
    except InvalidEntryError as exc:
        print(f"error: {src} is not a usable LoRA adapter: {exc}", file=sys.stderr)
        return 1
    folder = open_domain(args.image_dir, require_labels=False)
    model, navigator = _engine(args)
    images = list(folder.images())
    centroid = domain_centroid(navigator, images)
    with tempfile.TemporaryDirectory(dir=args.library.parent if args.library.parent.exists() else None) as tmp:
        # Validated where it is written, under its final name, before it enters the library.
        staged = write_entry(tmp, name, factors, centroid, lora_alpha=alpha, use_rslora=rslora, metadata={
            "name": name, "navigator": navigator.id, "embedding_dim": int(centroid.size),
            "source_adapter": str(src), "centroid_images": len(images), "data": str(folder.path),
            "base_model": base_model_id(model)})
        try:
            entry = load_entry(staged, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
        except InvalidEntryError as exc:
            print(f"error: {src} is not a usable adapter for this model: {exc}", file=sys.stderr)
            return 1
    write_entry(args.library, name, factors, centroid, lora_alpha=alpha, use_rslora=rslora,
                metadata=dict(entry.metadata), overwrite=args.overwrite)
    print(f"added {target}: {len(entry.modules)} target modules, r={entry.rank}, centroid of {len(images)} images")
    return 0


def _describe(lib: AdapterLibrary) -> dict:
    entries = []
    for e in lib.entries:
        entries.append({"name": e.name, "rank": e.rank, "scaling": e.scaling, "modules": len(e.modules),
                        "dropped_inert_qkv": len(e.dropped), "centroid_dim": int(e.centroid.shape[0]),
                        "centroid_norm": float(np.linalg.norm(e.centroid)), "official_layout": e.official_layout,
                        "navigator": e.metadata.get("navigator"), "init": e.metadata.get("init"),
                        "profile": e.metadata.get("profile"),
                        "trainable_parameters": e.metadata.get("trainable_parameters")})
    return {"root": str(lib.root), "entries": entries, "skipped": [{"name": n, "reason": r} for n, r in lib.skipped],
            "median_inter_centroid_distance": lib.median_inter_centroid_distance}


def cmd_list(args) -> int:
    lib = AdapterLibrary.open(args.library)
    info = _describe(lib)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if lib.entries else 1
    print(f"{lib.root}: {len(lib)} entries, {len(lib.skipped)} skipped")
    print(f"  {'name':16s} {'r':>3s} {'scale':>6s} {'modules':>7s} {'dim':>5s}  layout    navigator")
    for e in info["entries"]:
        layout = "official" if e["official_layout"] else "ours"
        print(f"  {e['name']:16s} {e['rank']:3d} {e['scaling']:6g} {e['modules']:7d} {e['centroid_dim']:5d}  "
              f"{layout:8s}  {e['navigator'] or '(unknown: official centroid)'}")
    for n, r in lib.skipped:
        print(f"  SKIPPED {n}: {r}")
    return 0 if lib.entries else 1


TABLE_MAX = 20   # entries up to which inspect prints the full distance table


def cmd_inspect(args) -> int:
    from ..evaluation import figures

    lib = AdapterLibrary.open(args.library)
    if not lib.entries:
        print(f"error: no usable entry in {args.library} (skipped: {lib.skipped})", file=sys.stderr)
        return 1
    c = lib.centroids
    names = lib.names
    print(f"{lib.root}: {len(lib)} entries, centroid dim {lib.dim}, median inter-centroid distance "
          f"{lib.median_inter_centroid_distance:.4g}")
    for n, r in lib.skipped:
        print(f"  SKIPPED {n}: {r}")
    if len(lib) <= TABLE_MAX:
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)
        width = max(8, max(len(n) for n in names) + 1)
        print(" " * width + "".join(f"{n[:9]:>10s}" for n in names))
        for n, row in zip(names, d):
            print(f"{n:{width}s}" + "".join(f"{v:10.4g}" for v in row))
    else:
        print(f"  (distance table omitted above {TABLE_MAX} entries; --map draws the centroids)")
    bad = _deep_check(lib, args) if args.deep else 0
    if args.map is not None:
        samples = {}
        if args.images:
            if not args.model:
                print("error: --images needs --model (and --checkpoint) to embed them", file=sys.stderr)
                return 2
            from ..evaluation.dataset import open_domain

            _, navigator = _engine(args)
            for spec in args.images:
                label, _, path = spec.partition("=")
                folder = open_domain(path or label, require_labels=False)
                samples[label if path else folder.name] = navigator.embed(list(folder.images()))
        args.map.parent.mkdir(parents=True, exist_ok=True)
        figures.centroid_map(list(names), c, args.map, samples, title=f"{lib.root.name}: centroids (PCA)")
        print(f"wrote {args.map}")
    return 1 if bad else 0


def _deep_check(lib: AdapterLibrary, args) -> int:
    """Read every entry's factors, one at a time (nothing kept); print |dW| or why it is unusable.
    Returns the number of unusable entries."""
    from ..core.fusion import WeightStager, fuse_deltas

    stager = None
    if args.model:
        model, _ = _engine(args)
        stager = WeightStager(model, lib.target_modules)
    lib.cache.resize(0)
    bad = 0
    for e in lib.entries:
        try:
            held = e.load()
            if stager is not None:
                stager.check_adapter(held)
        except ValueError as exc:     # InvalidEntryError included
            bad += 1
            print(f"  BAD {e.name}: {exc}")
            continue
        norms = [float(d.norm()) for d in fuse_deltas([held], [1.0]).values()]
        print(f"  OK {e.name}: {len(norms)} modules, |dW|_F mean {np.mean(norms):.4g} max {np.max(norms):.4g}"
              + (f", {len(e.dropped)} inert q/k/v factors dropped (official layout)" if e.dropped else ""))
    print(f"deep check: {len(lib) - bad} of {len(lib)} entries usable"
          + ("" if stager is not None else " (give --model to also check them against the model's weights)"))
    return bad


def cmd_import(args) -> int:
    model = None
    if args.model:
        from ..catseg.build import load_catseg

        model = load_catseg(args.model, args.checkpoint, allow_random_weights=args.checkpoint is None)
    lib = AdapterLibrary.open(args.loradb, navigator_dim=args.navigator_dim, model=model)
    print(f"{args.loradb}: {len(lib)} valid entries, {len(lib.skipped)} invalid")
    for e in lib.entries:
        print(f"  OK {e.name}: r={e.rank} scaling {e.scaling:g}, {len(e.modules)} modules fused"
              + (f" ({len(e.dropped)} inert CLIP q/k/v factors dropped, as in official SemLA)" if e.dropped else "")
              + f", centroid dim {e.centroid.shape[0]}")
    for n, r in lib.skipped:
        print(f"  INVALID {n}: {r}")
    if args.into is not None and lib.entries:
        args.into.mkdir(parents=True, exist_ok=True)
        for e in lib.entries:
            dest = args.into / e.name
            if dest.exists():
                if not args.overwrite:
                    print(f"  kept existing {dest} (use --overwrite)")
                    continue
                shutil.rmtree(dest)
            # Official files only, unchanged: adding metadata.json would change how the entry is read.
            shutil.copytree(e.path, dest)
        print(f"copied {len(lib)} entries into {args.into} (official layout kept)")
    if not lib.entries:
        return 2
    return 1 if lib.skipped else 0


def cmd_gaps(args) -> int:
    from ..core.coverage import CoverageSettings
    from ..relabel import gaps
    from ..relabel.cluster import ClusterSettings

    lib = AdapterLibrary.open(args.library)
    if not lib.entries:
        print(f"error: no usable entry in {args.library}", file=sys.stderr)
        return 1
    cluster = ClusterSettings(args.cluster_scale or ClusterSettings.scale,
                              args.min_cluster_size or ClusterSettings.min_size)
    is_job = (args.source / "job.json").is_file()
    if is_job:
        proposals, info = gaps.from_relabel_job(args.source, lib, cluster,
                                                args.max_relative_distance or CoverageSettings.max_relative_distance)
    else:
        proposals, info = gaps.from_capture(args.source, lib, cluster)
    written = []
    if args.out is not None and proposals:
        pseudo = None
        if is_job:
            classes = json.loads((args.source / "job.json").read_text())["engine"]["classes"]
            if args.pseudo_labels:
                pseudo = lambda p, files: gaps.job_masks(args.source, p.frames)  # noqa: E731
        else:
            from ..evaluation.dataset import read_classes

            classes_file = args.source / "classes.txt"
            classes = read_classes(classes_file) if classes_file.is_file() else []
            if args.pseudo_labels:
                if not args.model:
                    print("error: --pseudo-labels on a capture folder needs --model (and --checkpoint)", file=sys.stderr)
                    return 2
                from ..engine import EngineSpec, build_engine

                spec = EngineSpec(model_config=args.model, checkpoint=args.checkpoint or "",
                                  allow_random_weights=args.allow_random_weights, library_path=str(args.library),
                                  navigator=args.navigator, device=args.device, classes=tuple(classes),
                                  backend="torch")   # a few pseudo-labels: no engine to build
                pseudo = gaps.model_pseudo_labels(build_engine(spec).raise_for_errors(), args.source)
        if not classes:
            print(f"error: no classes.txt in {args.source}: cannot write trainable folders", file=sys.stderr)
            return 2
        written = gaps.export_proposals(proposals, args.source, args.out, classes, pseudo)
    if args.json:
        print(json.dumps({**info, "proposals": [p.to_json() for p in proposals],
                          "written": [str(w) for w in written]}, indent=2))
        return 0
    what = (f"{info['uncovered']} of {info['frames']} frames uncovered" if is_job
            else f"{info['frames']} captured frames")
    print(f"{args.source}: {what}; {len(proposals)} proposed entr{'y' if len(proposals) == 1 else 'ies'} "
          f"(library {lib.root}, median centroid spacing {lib.median_inter_centroid_distance:.4g})")
    for p in proposals:
        near = ", ".join(f"{n} {r:.2f}x" for n, _, r in p.nearest)
        print(f"  {p.name}: {len(p.frames)} frames, {p.mean_relative_distance:.2f}x the spacing from the nearest "
              f"adapter on average; nearest to its centroid: {near}")
    for w in written:
        labels = "PSEUDO-labels in labels/" if (w / "PSEUDO_LABELS.txt").is_file() else "add labels/ to train"
        print(f"  wrote {w} ({labels}); then: semla-library train {w} --library LIB --model ... --checkpoint ...")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"train": cmd_train, "add": cmd_add, "list": cmd_list, "inspect": cmd_inspect,
               "import": cmd_import, "gaps": cmd_gaps}[args.command]
    try:
        return command(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
