"""`make demo` / `semla-demo`: domain-shift adaptation end to end on the built-in demo world.

What runs: the demo assets are built (or taken from the cache), then two separate processes are
started, the demo camera (`semla_ros.ros.demo_camera`, under /demo) and the real segmenter node
(`semla_ros.ros.node`, under /semla, its `image` remapped to /demo/image). This process only
listens: it records the camera's images and ground truth, and the node's masks, support scores
and fusion events, for one pass of the domain sequence. Then it stops both, scores the published
masks against the ground truth next to the same base model without adaptation, prints a summary
and writes a PNG.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ..demo.build_assets import Assets, BuildParams, ensure_assets
from ..demo.node_parameters import DEMO_BACKEND
from ..demo.run_analysis import analyse, first_frame_time, print_summary, swap_rows
from ..demo.sequence import DEFAULT_SEQUENCE, DomainSequence
from ..demo.settings import DEMO_NODE_SETTINGS
from ..engine.spec import BACKENDS


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", default=DEFAULT_SEQUENCE, help="domain:seconds,... (default %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz")
    parser.add_argument("--out", type=Path, default=Path("semla_demo.png"), help="PNG to write")
    parser.add_argument("--assets", type=Path, default=None, help="use this built asset directory")
    parser.add_argument("--cache-dir", type=Path, default=None, help="asset cache root")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the assets even if cached")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    parser.add_argument("--backend", choices=BACKENDS, default=DEMO_BACKEND,
                        help="how the node runs the network (node parameter `backend`; default %(default)s, "
                             "see demo/node_parameters.py; engines are cached with the assets)")
    parser.add_argument("--record-bag", type=Path, default=None, metavar="DIR",
                        help="only write the demo drive (--sequence, --rate) as a rosbag2 folder DIR (the input of "
                             "docs/relabel.md's semla-relabel), then exit; an existing DIR is never replaced")
    return parser


class DemoError(Exception):
    """A step failed: the message for the user and the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _assets(args, timings: dict) -> tuple[Assets, str]:
    """The given asset directory, or the cached build (built now if missing or --rebuild)."""
    if args.assets is not None:
        assets = Assets(args.assets)
        if not assets.exists():
            raise DemoError(f"{args.assets} is not a built asset directory "
                            "(python -m semla_ros.demo.build_assets builds one)", 2)
        return assets, f"{assets.root} (given)"
    t = time.monotonic()
    print("demo assets: small CAT-Seg + one LoRA per domain (built once, then cached)")
    assets, built = ensure_assets(args.cache_dir, BuildParams(), force=args.rebuild)
    timings["asset build" if built else "asset cache"] = time.monotonic() - t
    return assets, f"{assets.root} ({'built now' if built else 'cached'})"


def _record(args, assets: Assets, sequence: DomainSequence, timings: dict):
    """The node and the demo camera as processes, recorded for one pass (semla_ros.ros.demo_recorder)."""
    from ..ros.demo_recorder import record

    t = time.monotonic()
    settings = dict(DEMO_NODE_SETTINGS, backend=args.backend)
    if args.backend != "torch":
        settings["engine_cache_dir"] = str(assets.root / "engine_cache")
    with tempfile.TemporaryDirectory(prefix="semla-demo-") as tmp:
        try:
            rec, frames = record(assets, sequence, args.sequence, Path(tmp), settings)
        except RuntimeError as exc:
            raise DemoError(str(exc), 1) from exc
    timings["recording"] = time.monotonic() - t
    if not rec.masks:
        raise DemoError("the node published no mask", 1)
    return rec, frames


def _report(args, assets: Assets, sequence: DomainSequence, rec, frames, build_info: str, timings: dict,
            t_start: float) -> None:
    """Scores, swaps, the picture, the printed summary and the JSON numbers (semla_ros.demo.run_analysis)."""
    from ..demo.plot import plot_demo

    t = time.monotonic()
    per_frame, rows = analyse(rec, frames, assets, sequence)
    t0 = first_frame_time(rec, frames)
    swaps = swap_rows(rec, frames, t0, sequence)
    plot_demo(args.out, rec, frames, per_frame, swaps, rows, sequence, t0)
    timings["scoring + plot"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t_start
    report = assets.report
    print_summary(swaps, rows, build_info, timings, args.out.resolve(), report)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "backend": args.backend, "swaps": swaps, "domains": [r.__dict__ for r in rows], "timings": timings,
            "retrieval_top1_heldout": report["retrieval_top1_accuracy"], "assets": str(assets.root),
            "frames": len(rec.truths), "masks": len(rec.masks)}, indent=2, default=float))


def main(argv: list[str] | None = None) -> int:
    from .ending import run_command

    return run_command("semla-demo", demo, argv)


def demo(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    t_start, timings = time.monotonic(), {}
    try:
        try:
            sequence = DomainSequence.parse(args.sequence, args.rate)
        except ValueError as exc:
            raise DemoError(str(exc), 2) from exc
        if args.record_bag is not None:
            from ..demo.drive_bag import record_drive_bag

            frames = len(record_drive_bag(args.record_bag, sequence))
            print(f"wrote {args.record_bag} ({frames} frames of {args.sequence} at {args.rate:g} Hz)")
            return 0
        assets, build_info = _assets(args, timings)
        rec, frames = _record(args, assets, sequence, timings)
        _report(args, assets, sequence, rec, frames, f"{build_info}; backend {args.backend}", timings, t_start)
    except DemoError as error:
        print(f"semla-demo: {error}", file=sys.stderr)
        return error.code
    return 0

if __name__ == "__main__":
    sys.exit(main())
