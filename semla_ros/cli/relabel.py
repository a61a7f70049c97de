"""`semla-relabel`: offline relabelling of recorded drives with per-cluster fusion (SemLA supplementary E).

    semla-relabel DRIVE.mcap --out OUT --demo --topic /demo/image [--labels-topic /demo/ground_truth]
    semla-relabel BAG_DIR IMAGE_DIR --out OUT --model CFG --checkpoint W --library LIB [--navigator ...]
    semla-relabel A B --out OUT --demo --ray [ADDRESS]

Inputs: ROS 2 bags (a rosbag2 directory, or one .mcap / .db3 file; read without ROS) or image
folders. Steps, output layout and resuming: semla_ros/relabel/job.py and state.py. Rerunning the
same command finishes an interrupted job; `--restart` discards what OUT holds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.fields import add_options, option_values
from ..core.settings import SegmenterSettings
from ..engine.spec import OFFLINE_DEFAULTS, EngineSpec
from ..relabel.cluster import ClusterSettings
from ..relabel.job import RelabelSettings
from .ending import run_command

ENGINE_OPTIONS = ("checkpoint", "allow_random_weights", "navigator", "device")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semla-relabel", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, help="bags (directory, .mcap, .db3) and/or image folders")
    p.add_argument("--out", type=Path, required=True, help="job folder: masks, bags, report, resumable state")
    m = p.add_argument_group("model and library (like semla-eval run), or --demo")
    m.add_argument("--demo", action="store_true", help="the demo assets (model, library, navigator 'tower', classes, "
                                                       "the demo node's debounce settings); built if missing")
    m.add_argument("--cache-dir", type=Path, default=None, help="--demo: asset cache (default SEMLA_DEMO_CACHE)")
    m.add_argument("--model", help="CAT-Seg config: registry name or CatSegConfig JSON")
    m.add_argument("--library", default=None, help="adapter library (SemLA loradb layout)")
    add_options(m, EngineSpec, only=ENGINE_OPTIONS, overrides=OFFLINE_DEFAULTS)
    m.add_argument("--classes", default=None,
                   help="class names, comma-separated or a classes.txt (default: an input folder's classes.txt)")
    i = p.add_argument_group("inputs")
    i.add_argument("--topic", default=None, help="bags: the image topic (raw or compressed); needed when several")
    i.add_argument("--labels-topic", default=None, help="bags: mono8 ground truth with the images' stamps (for mIoU)")
    i.add_argument("--rate-hz", type=float, default=10.0, help="folders: frame rate of the stamps (debounced replay)")
    j = p.add_argument_group("job")
    add_options(j, RelabelSettings)
    add_options(j, ClusterSettings, prefix="cluster_", aliases={"min_size": "--min-cluster-size"})
    j.add_argument("--restart", action="store_true", help="discard another job's state in --out")
    j.add_argument("--quiet", action="store_true", help="no progress bars")
    s = p.add_argument_group("retrieval and the debounced replay (default: the node's; --demo: the demo node's)")
    add_options(s, SegmenterSettings, defaults=False)
    r = p.add_argument_group("Ray")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run embedding and segmentation on Ray actors: a new local instance, or ADDRESS")
    r.add_argument("--ray-workers", type=int, default=None, help="actors (one model copy each); default: CPUs")
    r.add_argument("--ray-cpus-per-worker", type=int, default=1)
    return p


def _classes(args, recordings) -> tuple[str, ...] | None:
    if args.classes:
        path = Path(args.classes)
        if path.is_file():
            from ..evaluation.dataset import read_classes

            return tuple(read_classes(path))
        return tuple(c.strip() for c in args.classes.split(",") if c.strip())
    for rec in recordings:
        if getattr(rec, "classes", ()):
            return tuple(rec.classes)
    return None


def engine_spec(args, recordings):
    """The EngineSpec the options describe (--demo: the demo assets, built if missing)."""
    changes = option_values(args, SegmenterSettings)
    classes = _classes(args, recordings)
    if args.demo:
        from ..demo import world
        from ..demo.build_assets import ensure_assets
        from ..demo.settings import DEMO_NODE_SETTINGS

        assets, _ = ensure_assets(args.cache_dir, log=lambda line: print(line, file=sys.stderr))
        settings = SegmenterSettings().replace(**DEMO_NODE_SETTINGS).replace(**changes)
        return EngineSpec(model_config=str(assets.config_path), checkpoint=str(assets.checkpoint),
                          library_path=str(assets.library), navigator="tower", device=args.device,
                          classes=classes or tuple(world.CLASS_NAMES), settings=settings,
                          backend="torch")   # batched through the PyTorch model (relabel/work.can_batch)
    if not args.model or not args.library:
        raise ValueError("give --model (and --checkpoint) and --library, or --demo")
    spec = EngineSpec(model_config=args.model, library_path=args.library, **option_values(args, EngineSpec,
                                                                                          only=ENGINE_OPTIONS),
                      settings=SegmenterSettings().replace(**changes),
                      backend="torch")   # batched through the PyTorch model (relabel/work.can_batch)
    return spec.replace(classes=classes) if classes else spec


def relabel_settings(args) -> RelabelSettings:
    """The job's settings the options describe."""
    cluster = ClusterSettings(**option_values(args, ClusterSettings, prefix="cluster_"))
    return RelabelSettings(**option_values(args, RelabelSettings), cluster=cluster)


def main(argv: list[str] | None = None) -> int:
    return run_command("semla-relabel", relabel, argv,
                       interrupted="what was finished is kept; rerun the same command to resume")


def relabel(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..engine import build_engine
    from ..relabel.job import RelabelJob
    from ..relabel.recording import open_recording
    from ..relabel.state import JobFolder

    recordings = [open_recording(path, args.topic, args.labels_topic, args.rate_hz) for path in args.inputs]
    names = [r.name for r in recordings]
    if len(set(names)) != len(names):
        recordings = [open_recording(path, args.topic, args.labels_topic, args.rate_hz, name=f"{r.name}-{k}")
                      for k, (path, r) in enumerate(zip(args.inputs, recordings, strict=True))]
    JobFolder(args.out).check_target([r.path for r in recordings])      # before the model loads
    spec = engine_spec(args, recordings)
    build = build_engine(spec).raise_for_errors()
    settings = relabel_settings(args)
    workers = None
    if args.ray is not None:
        from ..relabel.ray_runner import RayWorkers

        workers = RayWorkers(spec, address=args.ray or None, workers=args.ray_workers,
                             cpus_per_worker=args.ray_cpus_per_worker)
    job = RelabelJob(build, recordings, args.out, settings, workers=workers, restart=args.restart,
                     progress=not args.quiet, log=lambda line: print(line, file=sys.stderr))
    report = job.run()
    from ..relabel.report import markdown

    print(markdown(report))
    print(f"wrote {args.out}/report.md, report.json")
    return 0

if __name__ == "__main__":
    sys.exit(main())
