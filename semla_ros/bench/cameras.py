"""`semla-bench cameras`: N cameras served by one node (image_topics) vs N single-camera nodes, side by side.

Both set-ups run the same model, library, navigator and settings, the same N synthetic cameras (each in its own
process, --rate Hz, --size, on /bench/cam<i>/image) and publish each camera's masks on /bench/cam<i>/mask:
  one node   `python -m semla_ros.ros.node` in /bench with image_topics [cam0, cam1, ...]
  N nodes    N of them, node i in /bench/cam<i> with the default single camera
The cameras publish faster than either set-up segments (30 Hz each by default), so both run saturated. After
every node reports 'running' and every camera's first mask has arrived, --warmup seconds pass, then masks are
counted for --duration seconds. Printed per set-up (one line each, in the order they ran, --rounds times alternating):
  rss_mb       the node processes' RSS summed, at the end of the window
  peak_mb      their peak RSS (VmHWM) summed
  masks_per_s  masks received on all cameras' mask topics over the window, in total, and per camera
  cpu          CPU time the node processes used over the window / its length (cores' worth), and masks per
               CPU-second: on a machine shared with other work, N processes get more of the CPU than one, so
               masks per CPU-second compares what each set-up does with the CPU it got
  ms           the nodes' own means per frame (/diagnostics, last 5 s): model, all processing, publishing
  batched      the share of the frames segmented so far that shared a forward with another camera's frame
               (/diagnostics batched_frames / frames_processed; 0 for single-camera nodes)
  workers      inference threads in all the set-up's nodes (/diagnostics inference_workers; the one node's
               default is one per camera, at most the CPU cores)
and the ratios one node / N nodes. The demo's small model (issue 24's 0.9-1.2 GB per node):

    semla-bench cameras --assets ~/.cache/semla_ros/demo/<key> --cameras 3
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

from semla_ros.ros import processes
from semla_ros.ros.dds_profile import with_large_image_transport


def _status_kb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-bench cameras", description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second of each camera")
    parser.add_argument("--size", default="320x240", help="camera WIDTHxHEIGHT")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the first masks before counting")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds masks are counted")
    parser.add_argument("--rounds", type=int, default=1, help="times each set-up runs, alternating")
    parser.add_argument("--assets", default="", help="a built demo asset directory (its model, library, tower "
                        "navigator and the demo's settings); '' = the tiny model with random weights, no library")
    parser.add_argument("--device", default="cpu")
    return parser


def _params(args) -> dict:
    if args.assets:
        from semla_ros.demo.build_assets import Assets
        from semla_ros.demo.node_parameters import node_parameters

        assets = Assets(Path(args.assets).expanduser())
        if not assets.exists():
            raise SystemExit(f"no built demo assets in {assets.root}")
        params = node_parameters(assets, args.device)
    else:
        params = dict(model_config="tiny", checkpoint="", allow_random_weights=True, navigator="tower",
                      device=args.device)
    params["diagnostics_period_s"] = 0.5
    return params


class Listener:
    """Counts each camera's masks (arrival times) and remembers which node statuses say 'running'."""

    def __init__(self, cameras: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        rclpy.init()
        self.node = rclpy.create_node("bench_cameras_listener")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.masks: list[list[float]] = [[] for _ in range(cameras)]
        self.states: dict[str, str] = {}
        self.values: dict[str, dict[str, str]] = {}   # the newest diagnostics key/values per node status
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for i in range(cameras):
            self.node.create_subscription(Image, f"/bench/cam{i}/mask",
                                          lambda _msg, i=i: self.masks[i].append(time.monotonic()), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "state" in values:
                self.states[status.name] = values["state"]
                self.values[status.name] = values

    def reset(self) -> None:
        self.masks = [[] for _ in self.masks]
        self.states.clear()
        self.values.clear()

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def spin_until(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _run(args, setup: str, params: dict, workdir: Path, listener: Listener) -> dict | None:
    """Start the set-up's nodes and the cameras, measure, stop everything; the figures or None on failure."""
    names = [f"cam{i}" for i in range(args.cameras)]
    if setup == "one node":
        layout = [("bench", {**params, "image_topics": names})]
    else:
        layout = [(f"bench/{name}", params) for name in names]
    listener.reset()
    nodes, cameras = [], []
    try:
        for k, (namespace, node_params) in enumerate(layout):
            params_file = workdir / f"{setup.replace(' ', '_')}_{k}.yaml"
            params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": node_params}}))
            log = workdir / f"{setup.replace(' ', '_')}_{k}.log"
            nodes.append((processes.start(processes.node_command(params_file, namespace), log), log))
        if not listener.spin_until(lambda: sum(s == "running" for s in listener.states.values()) >= len(nodes)
                                   or any(p.poll() is not None for p, _ in nodes), 300):
            print(f"{setup}: nodes did not come up")
            return None
        for proc, log in nodes:
            failed = processes.exited(proc, "node", log)
            if failed:
                print(f"{setup}: {failed}")
                return None
        for name in names:
            cameras.append(processes.start(processes.synthetic_camera_command(
                "day:0", args.rate, args.size, f"/bench/{name}/image", "--ros-args", "-r", f"__node:={name}")))
        if not listener.spin_until(lambda: all(listener.masks), 120):
            print(f"{setup}: not every camera got a mask")
            return None
        listener.spin(args.warmup)
        pids = [p.pid for p, _ in nodes]
        start, cpu_start = time.monotonic(), sum(_cpu_s(pid) for pid in pids)
        before = [len(m) for m in listener.masks]
        listener.spin(args.duration)
        elapsed, cpu = time.monotonic() - start, sum(_cpu_s(pid) for pid in pids) - cpu_start
        per_camera = [(len(m) - b) / elapsed for m, b in zip(listener.masks, before, strict=True)]
        ours = {f"/{namespace}" for namespace, _ in layout}   # a stopped set-up's last status may arrive late
        statuses = [v for name, v in listener.values.items() if name.split(":")[0].rsplit("/", 1)[0] in ours]

        def node_mean(key: str) -> float:
            values = [float(v.get(key, "nan")) for v in statuses]
            return sum(values) / len(values)

        def node_sum(key: str) -> float:
            return sum(float(v.get(key, "nan")) for v in statuses)

        return {"setup": setup, "nodes": len(nodes),
                "batched": node_sum("batched_frames") / node_sum("frames_processed"),
                "workers": int(node_sum("inference_workers")),
                "rss_mb": sum(_status_kb(pid, "VmRSS") for pid in pids) / 1024,
                "peak_mb": sum(_status_kb(pid, "VmHWM") for pid in pids) / 1024,
                "masks_per_s": sum(per_camera), "per_camera": per_camera, "cpu_share": cpu / elapsed,
                "masks_per_cpu_s": sum(per_camera) * elapsed / cpu,
                "model_ms": node_mean("model_ms_mean"), "process_ms": node_mean("process_ms_mean"),
                "publish_ms": node_mean("publish_ms_mean")}
    finally:
        for camera in cameras:
            processes.stop(camera, signal.SIGINT)
        for proc, _ in nodes:
            processes.stop(proc, signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with_large_image_transport()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    params = _params(args)
    print(f"{args.cameras} cameras at {args.rate:g} Hz, {args.size}, model {params['model_config']}, "
          f"library {params.get('library_path') or 'none'}, device {args.device}; warm-up {args.warmup:g} s, "
          f"window {args.duration:g} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    listener = Listener(args.cameras)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="semla-bench-cameras-") as tmp:
            for round_index in range(args.rounds):
                order = ["one node", f"{args.cameras} nodes"]
                for setup in order if round_index % 2 == 0 else order[::-1]:
                    result = _run(args, setup, params, Path(tmp), listener)
                    if result is None:
                        return 1
                    results.append(result)
                    print(f"{setup:9s}  rss_mb {result['rss_mb']:7.0f}  peak_mb {result['peak_mb']:7.0f}  "
                          f"masks_per_s {result['masks_per_s']:6.2f}  per camera "
                          + " ".join(f"{r:.2f}" for r in result["per_camera"])
                          + f"  cpu {result['cpu_share']:.2f} cores  masks_per_cpu_s {result['masks_per_cpu_s']:.2f}"
                          + f"  batched {result['batched']:.0%}  workers {result['workers']}"
                          + f"  ms per frame: model {result['model_ms']:.0f} process {result['process_ms']:.0f} "
                            f"publish {result['publish_ms']:.0f}"
                          + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        listener.close()

    def mean(setup_is_one: bool, key: str) -> float:
        values = [r[key] for r in results if (r["nodes"] == 1) == setup_is_one]
        return sum(values) / len(values)

    if args.cameras > 1:
        print(f"one node / {args.cameras} nodes:  rss {mean(True, 'rss_mb') / mean(False, 'rss_mb'):.2f}  "
              f"peak {mean(True, 'peak_mb') / mean(False, 'peak_mb'):.2f}  "
              f"masks/s {mean(True, 'masks_per_s') / mean(False, 'masks_per_s'):.2f}  "
              f"masks per CPU-second {mean(True, 'masks_per_cpu_s') / mean(False, 'masks_per_cpu_s'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
