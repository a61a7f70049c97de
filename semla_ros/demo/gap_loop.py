"""The library-gap loop on the demo world: hold one domain out of the library, drive through it, see the
gap flagged and its frames captured, propose an entry, train it on the captured frames, drive again.

    python -m semla_ros.demo.gap_loop --out docs        # docs/figures/gap_demo.png + docs/gap_demo.json

Steps, each with the project's real parts (the drives are replayed offline through the node's engine,
which is what the node runs; `test_ros_node_coverage.py` shows the same detection in the live node):
1. the demo library without the held-out domain's adapter;
2. drive 1: the demo camera's frames for `sequence`, through `SemlaSegmenter` (InlineExecutor, a clock
   from the frame times, the demo node's settings) and the node's `CoverageMonitor` (its default
   thresholds) capturing uncovered frames into work/capture;
3. `semla-library gaps work/capture --library LIB --out work/proposals` (the CLI, in its own process);
4. labels for the largest proposal's frames: the demo world's exact labels (on a robot: a labeller,
   or the pseudo-labels `gaps --pseudo-labels` writes);
5. `semla-library train work/proposals/gap-000 --library LIB+` (the CLI) into a copy of the library;
6. drive 2: the same sequence on streets never seen, replayed with the old library, with LIB+, and with
   the full demo library (the held-out domain's own adapter, trained on 96 labelled frames: the reference).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import world
from .sequence import CAMERA_SEED_BASE, DomainSequence
from .settings import DEMO_NODE_SETTINGS

DEFAULT_SEQUENCE = "clear:8,night:20,rain:8"
DRIVE2_SEED_BASE = CAMERA_SEED_BASE + 500_000   # streets the first drive never showed


def demo_spec(assets):
    """The demo assets' engine with the demo node's settings (the library is set per drive)."""
    from ..engine import EngineSpec

    return EngineSpec(model_config=str(assets.config_path), checkpoint=str(assets.checkpoint),
                      library_path=str(assets.library), navigator="tower", device="cpu", backend="torch",
                      classes=tuple(world.CLASS_NAMES)).replace(**DEMO_NODE_SETTINGS)


def drive(spec, library: Path, sequence: DomainSequence, seed_base: int, capture: Path | None = None,
          capture_period_s: float = 0.5, capture_max_frames: int = 100) -> dict:
    """Replay one drive with `library`; per frame: domain, seed, coverage verdict, active adapters, mIoU."""
    from ..core.coverage import STATUS_NAMES, CoverageMonitor, CoverageSettings
    from ..core.segmenter import InlineExecutor
    from ..engine import build_engine
    from ..evaluation.metrics import ConfusionAccumulator, confusion_matrix, mean_iou

    clock = [0.0]
    build = build_engine(spec.replace(library_path=str(library)), executor=InlineExecutor(),
                         clock=lambda: clock[0]).raise_for_errors()
    seg = build.segmenter
    settings = CoverageSettings(capture_dir=str(capture) if capture else "", capture_period_s=capture_period_s,
                                capture_max_frames=capture_max_frames)
    monitor = CoverageMonitor(settings, classes=world.CLASS_NAMES, navigator_id=build.navigator.id,
                              clock=lambda: clock[0])
    frames, swaps, per_domain = [], [], {}
    n_cls = len(world.CLASS_NAMES)
    try:
        for i in range(sequence.num_frames):
            domain, seed = sequence.domain_at(i), sequence.seed_at(i, seed_base)
            shot = world.render(domain, seed)
            clock[0] = i / sequence.rate_hz
            out = seg.process(shot.image, stamp=i)
            row = {"index": i, "t": clock[0], "domain": domain, "seed": seed,
                   "miou": mean_iou(confusion_matrix(out.class_ids, shot.labels, n_cls)),
                   "active": list(seg.active.adapters) if seg.active else []}
            per_domain.setdefault(domain, ConfusionAccumulator(n_cls)).add(out.class_ids, shot.labels)
            if out.fusion is not None and out.fusion.ok:
                swaps.append({"t": clock[0], "reason": out.fusion.reason, "adapters": out.fusion.adapters,
                              "weights": out.fusion.weights})
            if out.embedding is not None:
                r = monitor.observe(out.embedding, seg.library, seg.settings, shot.image, f"{i:06d}",
                                    {"index": i, "domain": domain, "seed": seed}, found=out.retrieval)
                seg.embed_densely(r.uncovered_fraction > 0)   # as the node does
                row.update(status=STATUS_NAMES[r.status], relative_distance=r.relative_distance,
                           uncovered_fraction=r.uncovered_fraction, captured=r.captured)
            frames.append(row)
    finally:
        seg.close()
    return {"library": str(library), "entries": list(build.library.names),
            "threshold": settings.max_relative_distance, "frames": frames, "swaps": swaps,
            "miou": {d: acc.miou for d, acc in per_domain.items()},
            "captured": sum(1 for f in frames if f.get("captured"))}


def _cli(*args: str) -> str:
    """Run a semla-library command in its own process (this source tree on its path; one OpenMP thread:
    on a busy CPU a second one spin-waits, see build_assets.build)."""
    import semla_ros

    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(semla_ros.__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-m", "semla_ros.cli.library", *args], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"semla-library {' '.join(args[:1])} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def _label_proposal(folder: Path, sequence: DomainSequence, seed_base: int) -> dict:
    """The world's exact labels for the proposal's captured frames (names are drive-1 frame indices)."""
    from PIL import Image

    (folder / "labels").mkdir(exist_ok=True)
    domains = {}
    for image in sorted((folder / "images").glob("*.png")):
        i = int(image.stem)
        domain = sequence.domain_at(i)
        shot = world.render(domain, sequence.seed_at(i, seed_base))
        Image.fromarray(shot.labels).save(folder / "labels" / image.name)
        domains[domain] = domains.get(domain, 0) + 1
    return domains


def run(spec, work: Path, held: str, sequence: DomainSequence, train_steps: int = 40, log=print) -> dict:
    """The whole loop; `spec` is the engine (its library_path the full library, entries named demo-<domain>)."""
    from .build_assets import adapter_name

    start = time.monotonic()
    if work.exists():
        shutil.rmtree(work)
    without, extended = work / "library_without", work / "library_extended"
    without.mkdir(parents=True)
    for entry in sorted(Path(spec.library_path).iterdir()):
        if entry.is_dir() and entry.name != adapter_name(held):
            shutil.copytree(entry, without / entry.name)
    log(f"1. library without {adapter_name(held)}: {sorted(p.name for p in without.iterdir())}")
    capture = work / "capture"
    first = drive(spec, without, sequence, CAMERA_SEED_BASE, capture)
    gap = [f for f in first["frames"] if f.get("status") == "gap"]
    log(f"2. drive 1: {sum(1 for f in first['frames'] if f['domain'] == held)} {held} frames; GAP on {len(gap)} "
        f"frames ({sorted({f['domain'] for f in gap})}); {first['captured']} frames captured")
    proposals = json.loads(_cli("gaps", str(capture), "--library", str(without), "--out", str(work / "proposals"),
                                "--json"))
    top = proposals["proposals"][0]
    log(f"3. semla-library gaps: {len(proposals['proposals'])} proposal(s); {top['name']}: {top['frames']} frames, "
        f"{top['mean_relative_distance']:.2f}x the spacing from the nearest adapter "
        f"({', '.join(a['name'] for a in top['nearest_adapters'])})")
    labelled = _label_proposal(work / "proposals" / top["name"], sequence, CAMERA_SEED_BASE)
    log(f"4. labelled {labelled} with the world's exact labels")
    shutil.copytree(without, extended)
    name = f"demo-{top['name']}"
    model = ["--checkpoint", spec.checkpoint] if spec.checkpoint else ["--allow-random-weights"]
    trained = _cli("train", str(work / "proposals" / top["name"]), "--library", str(extended), "--name", name,
                   "--model", spec.model_config, *model, "--navigator", spec.navigator, "--loss", "ce",
                   "--steps", str(train_steps), "--lr", "4e-3", "--batch-size", "8",
                   "--warmup-steps", str(max(1, train_steps // 10)), "--quiet")
    log(f"5. semla-library train: {trained.strip()}")
    second_old = drive(spec, without, sequence, DRIVE2_SEED_BASE)
    second_new = drive(spec, extended, sequence, DRIVE2_SEED_BASE)
    second_full = drive(spec, Path(spec.library_path), sequence, DRIVE2_SEED_BASE)
    result = {"held_out": held, "sequence": ",".join(f"{s.domain}:{s.seconds:g}" for s in sequence.segments),
              "rate_hz": sequence.rate_hz, "drive1": first, "proposals": proposals, "labelled": labelled,
              "entry": name, "train_output": trained.strip(), "drive2_old": second_old, "drive2_new": second_new,
              "drive2_full": second_full, "seconds": time.monotonic() - start}
    log(f"6. drive 2 ({held}): mIoU {second_old['miou'][held]:.3f} with the old library, "
        f"{second_new['miou'][held]:.3f} with {name} ({second_full['miou'][held]:.3f} with {adapter_name(held)}); "
        f"GAP frames "
        f"{sum(1 for f in second_old['frames'] if f.get('status') == 'gap')} -> "
        f"{sum(1 for f in second_new['frames'] if f.get('status') == 'gap')}")
    return result


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import _DOMAIN_COLOURS

    held, threshold = result["held_out"], result["drive1"]["threshold"]
    fig, axes = plt.subplots(3, 1, figsize=(14, 9.5), sharex=True)
    panels = [("drive 1, library without " + held, [(result["drive1"], "tab:red", "library without " + held)]),
              ("drive 2 (new streets)", [(result["drive2_old"], "tab:red", "library without " + held),
                                         (result["drive2_new"], "tab:blue", f"+ {result['entry']}")])]
    dt = 1.0 / result["rate_hz"]
    for ax in axes:
        frames = result["drive1"]["frames"]
        start = 0
        for i in range(1, len(frames) + 1):
            if i == len(frames) or frames[i]["domain"] != frames[start]["domain"]:
                ax.axvspan(frames[start]["t"], frames[i - 1]["t"] + dt, color=_DOMAIN_COLOURS[frames[start]["domain"]],
                           alpha=0.6, lw=0)
                ax.text((frames[start]["t"] + frames[i - 1]["t"]) / 2, 0.97, frames[start]["domain"],
                        transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=9)
                start = i
    for ax, (title, runs) in zip(axes[:2], panels, strict=True):
        for run_, colour, label in runs:
            f = [x for x in run_["frames"] if "relative_distance" in x]
            ax.plot([x["t"] for x in f], [x["relative_distance"] for x in f], color=colour, lw=1.2, label=label)
            gap = [x for x in f if x["status"] == "gap"]
            ax.scatter([x["t"] for x in gap], [x["relative_distance"] for x in gap], s=14, color=colour, zorder=3,
                       label=f"{label}: GAP ({len(gap)} frames)")
            cap = [x for x in f if x.get("captured")]
            if cap:
                ax.scatter([x["t"] for x in cap], [0.02] * len(cap), marker="|", s=120, color="black",
                           transform=ax.get_xaxis_transform(), label=f"captured ({len(cap)} frames)")
        ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label=f"uncovered above {threshold:g}x spacing")
        ax.set_ylabel("nearest centroid /\nmedian spacing")
        ax.set_title(title, fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax = axes[2]
    for run_, colour, label, style in ((result["drive2_full"], "grey", f"full library (demo-{held})", ":"),
                                       (result["drive2_old"], "tab:red", "library without " + held, "-"),
                                       (result["drive2_new"], "tab:blue", f"+ {result['entry']}", "-")):
        ax.plot([x["t"] for x in run_["frames"]], [x["miou"] for x in run_["frames"]], color=colour, lw=1, ls=style,
                label=f"{label}: {held} mIoU {run_['miou'][held]:.3f}")
    for s in result["drive2_new"]["swaps"]:
        ax.axvline(s["t"], color="tab:blue", ls=":", lw=1)
        ax.text(s["t"], 0.02, f" {s['adapters'][0]}", rotation=90, fontsize=7, color="tab:blue",
                transform=ax.get_xaxis_transform(), va="bottom")
    ax.set_ylabel("per-frame mIoU")
    ax.set_xlabel("time (s)")
    ax.set_title("drive 2: masks vs the world's exact labels (dotted: swaps with the new library)", fontsize=10,
                 loc="left")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from .build_assets import BuildParams, ensure_assets

    parser = argparse.ArgumentParser(prog="python -m semla_ros.demo.gap_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", default="night", choices=world.DOMAINS, help="domain left out of the library")
    parser.add_argument("--sequence", default=DEFAULT_SEQUENCE, help="both drives, domain:seconds at 10 Hz")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="figures/gap_demo.png and gap_demo.json here")
    parser.add_argument("--name", default="gap_demo", help="file name of the figure and the numbers")
    parser.add_argument("--work", type=Path, default=None, help="libraries, capture, proposals (default: asset cache)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo asset cache (default SEMLA_DEMO_CACHE)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sequence = DomainSequence.parse(args.sequence)
    if args.held_out not in {s.domain for s in sequence.segments}:
        print(f"gap_loop: the sequence never shows the held-out domain {args.held_out!r}", file=sys.stderr)
        return 2
    assets, _ = ensure_assets(args.cache_dir, BuildParams())
    work = args.work or assets.root / f"gap_{args.held_out}"
    result = run(demo_spec(assets), work, args.held_out, sequence)
    (work / "result.json").write_text(json.dumps(result, default=float))   # every frame of every drive
    figure = plot(result, args.out / "figures" / f"{args.name}.png")
    summary = {k: v for k, v in result.items() if not k.startswith("drive")}
    for key in ("drive1", "drive2_old", "drive2_new", "drive2_full"):
        d = result[key]
        gaps = [f["domain"] for f in d["frames"] if f.get("status") == "gap"]
        summary[key] = {"entries": d["entries"], "miou": d["miou"], "captured": d["captured"], "swaps": d["swaps"],
                        "gap_frames": {dom: gaps.count(dom) for dom in d["miou"]},
                        "frames": {dom: sum(1 for f in d["frames"] if f["domain"] == dom) for dom in d["miou"]}}
    numbers = args.out / f"{args.name}.json"
    numbers.write_text(json.dumps(summary, indent=1, default=float))
    print(f"wrote {figure} and {numbers} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
