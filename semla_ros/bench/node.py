"""`semla-bench node`: what the ROS node adds around the model, and whether it stays flat under load.

Runs the real node (`python -m semla_ros.ros.node`, tiny CAT-Seg with random weights by default)
in its own process and the synthetic camera at 30 Hz, 640x480 rgb8, in another, against a model
far slower than the camera, for --duration seconds (default 120). Prints:
  encode   mask -> sensor_msgs/Image for a 640x480 mask (in this process, no model)
  node     per processed frame, from the node's own clocks (/diagnostics, means since start):
           conversion, mailbox wait, model, non-model processing, mask+score encode+publish,
           receipt->publish latency and "overhead" = latency - model (with and without mailbox wait)
  soak     every ~10% of the run (at most 30 s apart): node RSS, open fds, threads, age of the
           published masks (now - input stamp), frames processed and dropped as stale; then the RSS,
           fd, thread and age trends after warm-up (flat = no queue building up, no leak)
  shutdown seconds from SIGINT to the node's exit

With --cycle (e.g. `--cycle day,night,fog,dusk --dwell 20`) the camera cycles through those domains
and the node runs a synthetic library built for them (semla_ros.ros.synthetic_library) with
debouncing that follows every change; --reload-every S calls ~/reload_library every S seconds.
Then it also prints, per domain change, whether a swap to the new domain's adapters followed before
the next change (and how long after the first mask of the new domain), swaps inside a stationary
stretch, and the reload answers. `--startup` measures instead the time from process start to the first mask
(bench/startup.py). The 30-minute soak of issue 15:

    semla-bench node --duration 1800 --rate 10 --cycle day,night,fog,dusk --dwell 20 --reload-every 60
"""
from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from semla_ros.ros import processes
from semla_ros.ros.dds_profile import with_large_image_transport

# Debouncing that follows every change of the synthetic domains within about a second (as in the node's
# stream test): threshold 0.3 of the library's median centroid spacing, no cooldown.
CYCLE_SETTINGS = dict(threshold_mode="relative", switch_threshold=0.3, ema_alpha=0.8, min_consecutive=2,
                      cooldown_s=0.0, embed_every_n=1, warmup_frames=1, top_k=2)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _count(pid: int) -> tuple[int, int]:
    """(open file descriptors, threads) of a process; (-1, -1) once it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return -1, -1
    return fds, threads


def swaps_at_changes(masks: list[tuple[float, str]], fusions: list[tuple[float, str, str, tuple[str, ...]]]):
    """Match the swaps to the camera's domain changes.

    masks: (time, domain) of each published mask in order; fusions: (time, reason, domain of the frame
    that triggered it, adapter names). A change is the first mask of a new domain; it is followed when a
    fusion whose adapters all belong to the new domain arrives before the next change. Returns
    (changes [(time, domain, delay s or None, reason or None)], unexpected [fusions not explained by a
    change or a reload]).
    """
    changes = [(t, d) for i, (t, d) in enumerate(masks) if i > 0 and d != masks[i - 1][1]]
    bounds = [t for t, _ in changes[1:]] + ([float("inf")] if changes else [])   # a change ends where the next begins
    results, used = [], set()
    for (start, domain), end in zip(changes, bounds, strict=True):
        match = next((i for i, (t, reason, _, names) in enumerate(fusions)
                      if start <= t < end and names and all(n.startswith(f"{domain}-") for n in names)), None)
        if match is None:
            results.append((start, domain, None, None))
        else:
            used.add(match)
            results.append((start, domain, fusions[match][0] - start, fusions[match][1]))
    first = masks[0][0] if masks else float("inf")
    unexpected = [f for i, f in enumerate(fusions)
                  if i not in used and f[1] == "shift" and f[0] >= first]
    return results, unexpected


def _encode_timing(width: int, height: int, reps: int = 200) -> tuple[float, float]:
    """ms to pack a class-id mask into an Image, and to publish it (no subscriber), in this process."""
    from std_msgs.msg import Header

    from semla_ros.ros.image_conversion import mask_to_image

    ids = np.random.default_rng(0).integers(0, 19, size=(height, width))
    header = Header(frame_id="camera")
    start = time.perf_counter()
    for _ in range(reps):
        mask_to_image(ids, 19, header)
    return (time.perf_counter() - start) / reps * 1e3, float(ids.nbytes)


def _linear_slope(times: list[float], values: list[float]) -> float:
    if len(times) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(times), np.asarray(values), 1)[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-bench node", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="soak seconds (default 120)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--size", default="640x480", help="camera WIDTHxHEIGHT")
    parser.add_argument("--model-config", default="tiny", help="node parameter model_config")
    parser.add_argument("--checkpoint", default="", help="node parameter checkpoint ('' = random weights)")
    parser.add_argument("--library", default="", help="node parameter library_path ('' = base model)")
    parser.add_argument("--navigator", default="tower", help="node parameter navigator")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cycle", default="", help="domains the camera cycles through, e.g. day,night,fog,dusk "
                        "(a synthetic library for them is built unless --library is given)")
    parser.add_argument("--dwell", type=float, default=20.0, help="seconds per domain with --cycle")
    parser.add_argument("--reload-every", type=float, default=0.0, help="call ~/reload_library every S seconds")
    return parser


def _node_setup(args, workdir: Path, width: int, height: int) -> tuple[Path, list[str], str]:
    """The node's params file, the cycled domains and the camera's schedule (with --cycle: a synthetic library
    for those domains unless --library is given, and debouncing that follows every change)."""
    params = dict(model_config=args.model_config, checkpoint=args.checkpoint,
                  allow_random_weights=not args.checkpoint, library_path=args.library,
                  navigator=args.navigator, device=args.device, diagnostics_period_s=1.0)
    domains = [d for d in args.cycle.split(",") if d]
    schedule = "day:0"
    if domains:
        from semla_ros.ros.synthetic_library import build_synthetic_library

        if not args.library:
            params["library_path"] = str(workdir / "library")
            build_synthetic_library(workdir / "library", (height, width), domains=tuple(domains))
        params.update(CYCLE_SETTINGS)
        cycles = int(args.duration // (args.dwell * len(domains))) + 2
        schedule = ",".join(f"{d}:{args.dwell:g}" for _ in range(cycles) for d in domains)
        print(f"cycle    {' -> '.join(domains)}, {args.dwell:g} s each; library {params['library_path']}"
              + (f"; ~/reload_library every {args.reload_every:g} s" if args.reload_every else ""))
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return params_file, domains, schedule


@dataclass
class Heard:
    """What the probe heard from the node under /bench."""

    ages: list = field(default_factory=list)   # (time, age of the published mask in s)
    mask_domains: list = field(default_factory=list)   # (time, frame_id = the camera's domain) with --cycle
    fusions: list = field(default_factory=list)   # (time, reason, frame_id, adapters)
    reloads: list = field(default_factory=list)   # (seconds to the answer, success, message)
    diagnostics: list = field(default_factory=list)

    def diag(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}


class BenchProbe:
    """The rclpy side: subscriptions to the node's masks, fusions and /diagnostics, and ~/reload_library calls
    every `reload_every` s once armed."""

    def __init__(self, reload_every: float):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        from semla_ros.msg import AdapterFusion
        from semla_ros.ros.node import FUSION_QOS

        self.heard = Heard()
        self.reload_every = reload_every
        self.next_reload = float("inf")
        self._reload_call: list = []   # (start, future) of the reload in flight
        rclpy.init()
        self.node = rclpy.create_node("bench_probe")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.node.create_subscription(Image, "/bench/mask", self._on_mask,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(AdapterFusion, "/bench/fusion", self._on_fusion, FUSION_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.heard.diagnostics.append, 10)
        self._reload_client = self.node.create_client(Trigger, "/bench/semla_segmenter/reload_library")
        self._trigger = Trigger

    def _on_mask(self, msg) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.heard.ages.append((time.monotonic(), now - stamp))
        self.heard.mask_domains.append((time.monotonic(), msg.header.frame_id))

    def _on_fusion(self, msg) -> None:
        self.heard.fusions.append((time.monotonic(), msg.reason, msg.header.frame_id, tuple(msg.adapter_names)))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if self._reload_call and self._reload_call[0][1].done():
                started, future = self._reload_call.pop()
                reply = future.result()
                self.heard.reloads.append((now - started, reply.success, reply.message))
            if now >= self.next_reload and not self._reload_call:
                self._reload_call.append((now, self._reload_client.call_async(self._trigger.Request())))
                self.next_reload = now + self.reload_every

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _wait_running(probe: BenchProbe, node, node_log: Path, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while probe.heard.diag().get("state") != "running":
        if node.poll() is not None or time.monotonic() > deadline:
            print("node did not come up:\n" + node_log.read_text())
            return False
        probe.spin(0.2)
    return True


def _soak(args, probe: BenchProbe, node, node_log: Path) -> tuple[list, float] | None:
    """Sample the node every ~10 % of the run (at most 30 s apart) and print a row each; returns (samples
    [(t, rss MB, ages in the window, fds, threads)], the start time), or None if the node exited."""
    heard = probe.heard
    start = time.monotonic()
    if args.reload_every > 0:
        probe.next_reload = start + args.reload_every
    samples = []
    step = min(max(1.0, args.duration / 10), 30.0)
    print(f"{'t s':>6} {'rss MB':>8} {'fds':>4} {'thr':>4} {'masks':>6} {'age mean s':>10} {'age max s':>9} "
          f"{'model s':>7} {'processed':>9} {'stale':>6} {'in Hz':>6} {'out Hz':>6} {'swaps':>5}")
    last_index = 0
    while time.monotonic() - start < args.duration:
        probe.spin(min(step, args.duration - (time.monotonic() - start)))
        t = time.monotonic() - start
        window = [age for _, age in heard.ages[last_index:]]
        last_index = len(heard.ages)
        d = heard.diag()
        rss = _rss_mb(node.pid)
        fds, threads = _count(node.pid)
        samples.append((t, rss, window, fds, threads))
        print(f"{t:6.0f} {rss:8.1f} {fds:4d} {threads:4d} {len(heard.ages):6d} "
              f"{statistics.fmean(window) if window else float('nan'):10.2f} "
              f"{max(window) if window else float('nan'):9.2f} "
              f"{float(d.get('model_ms_mean', 'nan')) / 1e3:7.2f} {d.get('frames_processed', '?'):>9} "
              f"{d.get('frames_dropped_stale', '?'):>6} {d.get('input_rate_hz', '?'):>6} "
              f"{d.get('output_rate_hz', '?'):>6} {d.get('swaps', '?'):>5}", flush=True)
        if node.poll() is not None:
            print(f"node exited with {node.returncode}:\n" + node_log.read_text()[-4000:])
            return None
    return samples, start


def _print_node_means(d: dict) -> None:
    def mean_since_start(name: str) -> float:
        return float(d.get(f"{name}_mean_since_start", "nan"))

    model = mean_since_start("model_ms")
    queue = mean_since_start("queue_ms")
    latency = mean_since_start("latency_ms")
    non_model = mean_since_start("process_ms") - model
    print(f"node     frames processed {d.get('frames_processed')}, received {d.get('frames_received')}, "
          f"dropped stale {d.get('frames_dropped_stale')}, bad {d.get('frames_bad')}")
    print(f"node     means per processed frame (ms): conversion {mean_since_start('conversion_ms'):.2f}, "
          f"mailbox wait {queue:.1f}, model {model:.1f}, non-model processing {non_model:.2f}, "
          f"mask+score encode+publish {mean_since_start('publish_ms'):.2f}")
    print(f"node     receipt->publish {latency:.1f} ms; minus model: {latency - model:.1f} ms "
          f"(of which mailbox wait {queue:.1f}); node overhead without the wait: {latency - model - queue:.2f} ms")


def _print_trends(args, samples: list, ages: list) -> None:
    usable = [sample for sample in samples if sample[0] >= 0.2 * args.duration]  # after warm-up
    if len(usable) < 2:
        return
    times = [sample[0] for sample in usable]
    rss_slope = _linear_slope(times, [sample[1] for sample in usable]) * 60
    age_points = [(t, statistics.fmean(w)) for t, _, w, _, _ in usable if w]
    age_slope = _linear_slope([t for t, _ in age_points], [a for _, a in age_points]) * 60
    rss_values = [sample[1] for sample in usable]
    print(f"soak     RSS after warm-up (t >= {0.2 * args.duration:.0f} s): first {rss_values[0]:.1f}, "
          f"min {min(rss_values):.1f}, max {max(rss_values):.1f}, last {rss_values[-1]:.1f} MB; "
          f"linear trend {rss_slope:+.2f} MB/min over {len(usable)} samples")
    for name, index in (("open fds", 3), ("threads", 4)):
        values = [sample[index] for sample in usable]
        print(f"soak     {name} after warm-up: first {values[0]}, min {min(values)}, max {max(values)}, "
              f"last {values[-1]}; linear trend {_linear_slope(times, values) * 60:+.3f} /min")
    print(f"soak     mask age: trend {age_slope:+.3f} s/min, max {max(a for _, a in ages):.2f} s "
          f"(a queue would grow by ~{args.rate:.0f} frames/s; age stays ~ model time + one frame)")


def _print_swaps(domains: list[str], heard: Heard, start: float) -> None:
    fusions = heard.fusions
    changes, unexpected = swaps_at_changes([(t, d) for t, d in heard.mask_domains if d in domains], fusions)
    followed = [c for c in changes if c[2] is not None]
    delays = [c[2] for c in followed]
    by_reason = collections.Counter(f[1] for f in fusions)
    by_reason_followed = collections.Counter(c[3] for c in followed)
    print(f"swaps    {len(fusions)} fusions {dict(by_reason)}; {len(changes)} domain changes, "
          f"{len(followed)} followed by a swap to the new domain's adapters {dict(by_reason_followed)}")
    if delays:
        print(f"swaps    delay after the new domain's first mask: mean {statistics.fmean(delays):.2f} s, "
              f"max {max(delays):.2f} s")
    missed = [f"{d} at {t - start:.0f} s" for t, d, delay, _ in changes if delay is None]
    print(f"swaps    changes without a swap: {', '.join(missed) if missed else 'none'}; shift swaps with no "
          f"change: {len(unexpected)}")
    for t, _reason, frame, names in unexpected:   # e.g. a reload that fused half-way through a change
        previous = max((f for f in fusions if f[0] < t), key=lambda f: f[0], default=None)
        print(f"swaps      at {t - start:.0f} s on a '{frame}' frame: {', '.join(names)}"
              + (f" (previous swap {t - previous[0]:.1f} s before: {previous[1]}, {', '.join(previous[3])})"
                 if previous else ""))


def _print_reloads(reloads: list) -> None:
    answers = collections.Counter("loaded" if ok else ("in progress" if "in progress" in m else "failed")
                                  for _, ok, m in reloads)
    slowest = max((r[0] for r in reloads), default=float("nan"))
    print(f"reload   {len(reloads)} ~/reload_library answers ({dict(answers)}), slowest {slowest:.2f} s"
          + (f"; last: {reloads[-1][2]}" if reloads else ""))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--startup" in argv:   # process start to first mask: its own module (bench/startup.py)
        from semla_ros.bench import startup

        return startup.main([arg for arg in argv if arg != "--startup"])
    args = _parser().parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with_large_image_transport()  # 640x480 rgb8 frames exceed Fast DDS's default SHM segment
    width, height = (int(v) for v in args.size.lower().split("x"))

    encode_ms, mask_bytes = _encode_timing(width, height)
    print(f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}  input {width}x{height} rgb8 at {args.rate:g} Hz, "
          f"model {args.model_config} on {args.device}, soak {args.duration:g} s")
    print(f"encode   mask_to_image {width}x{height} mono8 ({mask_bytes / 1e3:.0f} kB): {encode_ms:.3f} ms")

    workdir = Path(tempfile.mkdtemp(prefix="semla_bench_node_"))
    params_file, domains, schedule = _node_setup(args, workdir, width, height)
    node_log = workdir / "node.log"
    node = processes.start(processes.node_command(params_file, "bench"), node_log)
    camera = None
    probe = BenchProbe(args.reload_every)
    try:
        if not _wait_running(probe, node, node_log):
            return 1
        camera = processes.start(processes.synthetic_camera_command(
            schedule, args.rate, args.size, "/bench/image", "--frame-id", "{domain}"))
        soaked = _soak(args, probe, node, node_log)
        if soaked is None:
            return 1
        samples, start = soaked
        processes.stop(camera)
        probe.spin(1.5)
        d = probe.heard.diag()
    finally:
        processes.stop(camera, signal.SIGKILL)
        _, shutdown_s = processes.stop(node)
        probe.close()

    _print_node_means(d)
    _print_trends(args, samples, probe.heard.ages)
    if domains:
        _print_swaps(domains, probe.heard, start)
    if args.reload_every > 0:
        _print_reloads(probe.heard.reloads)
    print(f"shutdown SIGINT -> exit {shutdown_s:.2f} s (exit code {node.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
