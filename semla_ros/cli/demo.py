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
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..demo import world
from ..engine.spec import BACKENDS
from ..demo.build_assets import Assets, BuildParams, ensure_assets, load_demo_model
from ..evaluation.metrics import confusion_matrix as confusion
from ..evaluation.metrics import mean_iou as miou
from ..demo.node_parameters import DEMO_BACKEND, node_parameters, write_params_file
from ..demo.sequence import DEFAULT_SEQUENCE, DomainSequence
from ..demo.settings import DEMO_NODE_SETTINGS
from ..ros.dds_profile import with_large_image_transport


@dataclass
class Recording:
    """Everything heard on the topics, keyed by header stamp (sec, nanosec)."""

    images: dict = field(default_factory=dict)
    truths: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    support: dict = field(default_factory=dict)   # stamp -> (support, ema, threshold, consecutive, active,
    #                                                 scale-free support, active fusion's scale-free, active is top-1)
    fusions: list = field(default_factory=list)  # (stamp, names, weights, distances, support, reason, ms, count)


def _stamp(header) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def _seconds(stamp: tuple[int, int]) -> float:
    return stamp[0] + stamp[1] * 1e-9


def _as_array(msg, channels: int) -> np.ndarray:
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    row = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return row[:, : msg.width * channels].reshape(shape).copy()


def _node_command(params_file: Path) -> list[str]:
    return [sys.executable, "-m", "semla_ros.ros.node", "--ros-args", "-r", "__ns:=/semla",
            "-r", "image:=/demo/image", "--params-file", str(params_file)]


def _camera_command(sequence: str, rate_hz: float, frame_log: Path) -> list[str]:
    return [sys.executable, "-m", "semla_ros.ros.demo_camera", "--ros-args", "-r", "__ns:=/demo",
            "-p", f"sequence:={sequence}", "-p", f"rate_hz:={rate_hz}", "-p", "loop:=false",
            "-p", f"frame_log:={frame_log}", "-p", "wait_for_subscribers:=2"]


def _stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def record(assets: Assets, sequence: DomainSequence, sequence_text: str, workdir: Path, settings: dict,
           ready_timeout: float = 90.0, log=print) -> tuple[Recording, list[dict]]:
    """Runs camera + node as separate processes and records one pass of the sequence."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from semla_ros.msg import AdapterFusion, SupportScore

    rec = Recording()
    frame_log = workdir / "frames.jsonl"
    node_log, camera_log = workdir / "node.log", workdir / "camera.log"
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with_large_image_transport(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                    env.get("PYTHONPATH", "")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    rclpy.init()
    listener = rclpy.create_node("semla_demo_recorder")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sensor = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability)

    def on_image(m):
        rec.images[_stamp(m.header)] = _as_array(m, 3)

    def on_truth(m):
        rec.truths[_stamp(m.header)] = _as_array(m, 1)

    def on_mask(m):
        rec.masks[_stamp(m.header)] = _as_array(m, 1)

    def on_support(m):
        rec.support[_stamp(m.header)] = (m.support_score, m.ema_distance, m.switch_threshold,
                                         m.consecutive_over_threshold, m.active_adapters, m.scale_free_support,
                                         m.active_scale_free_support, float(m.active_is_top))

    def on_fusion(m):
        rec.fusions.append((_stamp(m.header), list(m.adapter_names), list(m.weights), list(m.distances),
                            m.support_score, m.reason, m.fusion_ms, m.swap_count))

    listener.create_subscription(Image, "/demo/image", on_image, reliable)
    listener.create_subscription(Image, "/demo/ground_truth", on_truth, reliable)
    listener.create_subscription(Image, "/semla/mask", on_mask, sensor)
    listener.create_subscription(SupportScore, "/semla/support_score", on_support, sensor)
    listener.create_subscription(AdapterFusion, "/semla/fusion", on_fusion, latched)

    node = camera = None
    try:
        with open(node_log, "w") as out:
            params_file = write_params_file(workdir / "node_params.yaml", node_parameters(assets, settings=settings))
            node = subprocess.Popen(_node_command(params_file), env=env, stdout=out, stderr=subprocess.STDOUT)
        log(f"started semla_segmenter (pid {node.pid}); waiting for it to subscribe to /demo/image")
        deadline = time.monotonic() + ready_timeout
        # Ready = subscribed and the engine (model, library, navigator) built: the node logs it.
        while (listener.count_subscribers("/demo/image") < 2 or listener.count_publishers("/semla/mask") < 1
               or "segmenter ready" not in node_log.read_text(errors="replace")):
            rclpy.spin_once(listener, timeout_sec=0.2)
            if node.poll() is not None:
                raise RuntimeError(f"semla_segmenter exited with {node.returncode}:\n{_tail(node_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"semla_segmenter not ready after {ready_timeout:.0f} s:\n{_tail(node_log)}")
        with open(camera_log, "w") as out:
            camera = subprocess.Popen(_camera_command(sequence_text, sequence.rate_hz, frame_log), env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        log(f"started demo camera (pid {camera.pid}): {sequence_text} "
            f"({sequence.duration_s:.0f} s at {sequence.rate_hz:g} Hz); recording")
        end = None
        started = last_report = time.monotonic()
        # One pass, plus slack for the node's last masks; frames lost in transit do not hold us up.
        hard_end = started + sequence.duration_s + 4.0
        while True:
            rclpy.spin_once(listener, timeout_sec=0.05)
            for proc, name, path in ((node, "semla_segmenter", node_log), (camera, "demo camera", camera_log)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(path)}")
            if end is None and len(rec.truths) >= sequence.num_frames:
                end = time.monotonic() + 1.5  # let the last masks arrive
            if (end is not None and time.monotonic() > end) or time.monotonic() > hard_end:
                break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(f"  {len(rec.truths)}/{sequence.num_frames} frames, {len(rec.masks)} masks, "
                    f"{len(rec.fusions)} swaps")
            if len(rec.truths) == 0 and time.monotonic() > started + 30:
                raise RuntimeError(f"no frames from the demo camera:\n{_tail(camera_log)}")
    finally:
        _stop(camera)
        _stop(node)
        listener.destroy_node()
        rclpy.try_shutdown()
    frames = [json.loads(line) for line in frame_log.read_text().splitlines()] if frame_log.exists() else []
    return rec, frames


@dataclass
class DomainRow:
    domain: str
    frames: int
    masks: int
    support: float
    adapted_miou: float
    unadapted_miou: float


def analyse(rec: Recording, frames: list[dict], assets: Assets, sequence: DomainSequence):
    """Per-frame and per-domain scores of the published masks and the unadapted base model."""
    from ..catseg.predictor import CatSegPredictor

    by_stamp = {(f["sec"], f["nanosec"]): f for f in frames}
    stamps = sorted(s for s in rec.masks if s in rec.truths and s in by_stamp and s in rec.images)
    predictor = CatSegPredictor(load_demo_model(assets), list(world.CLASS_NAMES))
    n = len(world.CLASS_NAMES)
    per_frame = []
    conf_a, conf_u = {}, {}
    for s in stamps:
        truth = rec.truths[s]
        base = predictor.predict(rec.images[s]).class_ids.astype(np.uint8)
        d = by_stamp[s]["domain"]
        ca, cu = confusion(rec.masks[s], truth, n), confusion(base, truth, n)
        conf_a[d] = conf_a.get(d, 0) + ca
        conf_u[d] = conf_u.get(d, 0) + cu
        per_frame.append({"stamp": s, "index": by_stamp[s]["index"], "domain": d, "adapted": miou(ca),
                          "unadapted": miou(cu), "base_mask": base})
    rows = []
    order = list(dict.fromkeys(seg.domain for seg in sequence.segments))
    for d in order:
        dom_frames = [f for f in frames if f["domain"] == d]
        sup = [rec.support[(f["sec"], f["nanosec"])][0] for f in dom_frames
               if (f["sec"], f["nanosec"]) in rec.support]
        sup = [v for v in sup if np.isfinite(v)]
        rows.append(DomainRow(d, len(dom_frames), sum(1 for p in per_frame if p["domain"] == d),
                              float(np.mean(sup)) if sup else float("nan"),
                              miou(conf_a[d]) if d in conf_a else float("nan"),
                              miou(conf_u[d]) if d in conf_u else float("nan")))
    return per_frame, rows


def _swap_rows(rec: Recording, frames: list[dict], t0: float, sequence: DomainSequence) -> list[dict]:
    by_stamp = {(f["sec"], f["nanosec"]): f for f in frames}
    starts = np.cumsum([0] + sequence.frames_per_segment())[:-1]
    out = []
    for stamp, names, weights, dists, support, reason, ms, count in rec.fusions:
        f = by_stamp.get(stamp)
        index = f["index"] if f else None
        since = None
        if index is not None:
            seg = sequence.segment_index(index)
            since = (index - starts[seg]) / sequence.rate_hz
        out.append({"t": _seconds(stamp) - t0, "adapters": names, "weights": weights, "reason": reason,
                    "fusion_ms": ms, "support": support, "domain": f["domain"] if f else "?",
                    "since_change_s": since, "swap_count": count})
    return out


def print_summary(swaps, rows, build_info, timings, out_png, report) -> None:
    print("\n=== SemLA demo summary ===")
    print(f"assets: {build_info}")
    print(f"held-out retrieval top-1 (build check): {report['retrieval_top1_accuracy']:.1%}")
    print("\nswaps (t = seconds since the first frame; 'after change' = time since the camera's domain changed):")
    for s in swaps:
        fused = ", ".join(f"{n}:{w:.2f}" for n, w in zip(s["adapters"], s["weights"]))
        since = "" if s["since_change_s"] is None else f", {s['since_change_s']:.1f} s after change to {s['domain']}"
        print(f"  t={s['t']:6.1f}s  {s['reason']:8s} [{fused}]  fusion {s['fusion_ms']:.0f} ms{since}")
    if not swaps:
        print("  (none)")
    print("\nper domain (published masks of the adapted node vs the same base model without adaptation):")
    print(f"  {'domain':8s} {'frames':>6s} {'masks':>6s} {'support':>8s} {'mIoU adapted':>13s} {'unadapted':>10s} {'gain':>7s}")
    for r in rows:
        print(f"  {r.domain:8s} {r.frames:6d} {r.masks:6d} {r.support:8.3f} {r.adapted_miou:13.3f} "
              f"{r.unadapted_miou:10.3f} {r.adapted_miou - r.unadapted_miou:+7.3f}")
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"picture: {out_png}")


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    t_start = time.monotonic()
    try:
        sequence = DomainSequence.parse(args.sequence, args.rate)
    except ValueError as exc:
        print(f"semla-demo: {exc}", file=sys.stderr)
        return 2
    timings = {}
    if args.assets is not None:
        assets = Assets(args.assets)
        if not assets.exists():
            print(f"semla-demo: {args.assets} is not a built asset directory "
                  "(python -m semla_ros.demo.build_assets builds one)", file=sys.stderr)
            return 2
        build_info = f"{assets.root} (given)"
    else:
        t = time.monotonic()
        print("demo assets: small CAT-Seg + one LoRA per domain (built once, then cached)")
        assets, built = ensure_assets(args.cache_dir, BuildParams(), force=args.rebuild)
        timings["asset build" if built else "asset cache"] = time.monotonic() - t
        build_info = f"{assets.root} ({'built now' if built else 'cached'})"
    build_info += f"; backend {args.backend}"
    report = assets.report
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="semla-demo-") as tmp:
        try:
            settings = dict(DEMO_NODE_SETTINGS, backend=args.backend)
            if args.backend != "torch":
                settings["engine_cache_dir"] = str(assets.root / "engine_cache")
            rec, frames = record(assets, sequence, args.sequence, Path(tmp), settings)
        except RuntimeError as exc:
            print(f"semla-demo: {exc}", file=sys.stderr)
            return 1
    timings["recording"] = time.monotonic() - t
    if not rec.masks:
        print("semla-demo: the node published no mask", file=sys.stderr)
        return 1
    t = time.monotonic()
    per_frame, rows = analyse(rec, frames, assets, sequence)
    first = min(frames, key=lambda f: f["index"]) if frames else None
    t0 = _seconds((first["sec"], first["nanosec"])) if first else _seconds(min(rec.truths))
    swaps = _swap_rows(rec, frames, t0, sequence)
    from ..demo.plot import plot_demo

    plot_demo(args.out, rec, frames, per_frame, swaps, rows, sequence, t0)
    timings["scoring + plot"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t_start
    print_summary(swaps, rows, build_info, timings, args.out.resolve(), report)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "backend": args.backend, "swaps": swaps, "domains": [r.__dict__ for r in rows], "timings": timings,
            "retrieval_top1_heldout": report["retrieval_top1_accuracy"], "assets": str(assets.root),
            "frames": len(rec.truths), "masks": len(rec.masks)}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
