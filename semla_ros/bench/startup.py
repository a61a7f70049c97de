"""`semla-bench node --startup`: seconds from the node's process start to the first mask a subscriber receives.

Runs the real node (`python -m semla_ros.ros.node`) --runs times (default 5) per backend, each a fresh process,
while the synthetic camera already streams (so a frame is always waiting) and a subscriber in this process
listens to `mask`. Per run it prints the time from process start (just before the fork) to, read off the node's
own log stamps: its first log line (interpreter, imports, rclpy init, the node and its parameters), "segmenter
ready" (the engine build: torch, model, navigator, library) and, in this process, the first mask (first frame's
forward, publish, delivery); for an engine backend also whether the engine or PyTorch served that mask. Then the
median of each column.

--model demo (default) runs the demo model (its assets built and cached by `ensure_assets` on first use, or
--assets DIR); --model tiny runs the tiny config with random weights (tests). Engine backends use the engine
cache next to the assets (as `semla-demo --backend onnxruntime`), filled by one warm-up run that is not counted.

    semla-bench node --startup [--runs 5] [--backends torch,onnxruntime] [--model demo|tiny] [--assets DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from semla_ros.ros import processes

NAMESPACE = "startup"
LOG_STAMP = re.compile(r"^\[(?:INFO|WARN|ERROR|DEBUG|FATAL)\] \[(\d+\.\d+)\] \[[^\]]*\]: (.*)$")
READY_TEXT = "segmenter ready"
ENGINE_SERVING_TEXT = "engine serving"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semla-bench node --startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="node starts per backend (default 5)")
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated node `backend` values")
    parser.add_argument("--model", choices=("demo", "tiny"), default="demo",
                        help="demo: the demo model and library; tiny: random weights (tests)")
    parser.add_argument("--assets", type=Path, default=None, help="a built demo asset directory (default: the "
                                                                  "cached one, built on first use)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--size", default="320x240", help="camera WIDTHxHEIGHT")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a first mask")
    return parser


def node_parameters(args, backend: str, workdir: Path) -> dict:
    """The node's parameters for one backend: the demo's (assets, library, tower navigator) or the tiny model's."""
    if args.model == "tiny":
        params = dict(model_config="tiny", allow_random_weights=True, navigator="tower", device=args.device,
                      engine_cache_dir=str(workdir / "engine_cache"))
    else:
        from semla_ros.demo.build_assets import Assets, BuildParams, ensure_assets
        from semla_ros.demo.node_parameters import node_parameters as demo_parameters

        assets = Assets(args.assets) if args.assets else ensure_assets(None, BuildParams())[0]
        params = dict(demo_parameters(assets, device=args.device), engine_cache_dir=str(assets.root / "engine_cache"))
    return dict(params, backend=backend)


def log_events(text: str) -> list[tuple[float, str]]:
    """(wall-clock stamp, message) of each ROS log line of a node's output."""
    events = []
    for line in text.splitlines():
        match = LOG_STAMP.match(line.strip())
        if match:
            events.append((float(match.group(1)), match.group(2)))
    return events


def first_stamp(events: list[tuple[float, str]], text: str | None = None) -> float | None:
    return next((stamp for stamp, message in events if text is None or text in message), None)


class MaskProbe:
    """A subscriber to the node's mask: the wall-clock time of the first one after `arm()`."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        rclpy.init()
        self.node = rclpy.create_node("startup_probe")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.first: float | None = None
        self.since = 0.0
        self.node.create_subscription(Image, f"/{NAMESPACE}/mask", self._on_mask,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def _on_mask(self, msg) -> None:
        # Only a mask of a frame taken after this start: the previous node's last masks may still be queued.
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self.first is None and stamp >= self.since:
            self.first = time.time()

    def arm(self, since: float) -> None:
        self.first, self.since = None, since

    def wait(self, proc, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while self.first is None and proc.poll() is None and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        return self.first

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def one_start(params_file: Path, probe: MaskProbe, log_path: Path, timeout: float) -> dict | None:
    """Start the node, wait for its first mask, stop it; seconds from the start to each milestone (None if
    the node gave no mask)."""
    start = time.time()
    probe.arm(start)
    node = processes.start(processes.node_command(params_file, NAMESPACE), log_path)
    try:
        first_mask = probe.wait(node, timeout)
    finally:
        processes.stop(node)
    events = log_events(log_path.read_text(errors="replace"))
    if first_mask is None:
        print(f"no mask within {timeout:g} s; node log:\n{processes.tail(log_path)}")
        return None

    def since_start(stamp):
        return None if stamp is None else stamp - start

    serving = first_stamp(events, ENGINE_SERVING_TEXT)
    return {"first_log": since_start(first_stamp(events)), "ready": since_start(first_stamp(events, READY_TEXT)),
            "mask": first_mask - start, "engine": serving is not None and serving <= first_mask}


def _seconds(value: float | None) -> str:
    return f"{value:8.2f}" if value is not None else f"{'-':>8}"


def run_backend(args, backend: str, probe: MaskProbe, workdir: Path) -> list[dict]:
    params_file = workdir / f"{backend}.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": node_parameters(args, backend, workdir)}}))
    if backend != "torch":   # fill the engine cache once (a run that waits until the engine serves)
        print(f"{backend}: warm-up run (fills the engine cache; not counted)", flush=True)
        _warm_engine(params_file, workdir / f"{backend}-warmup.log", args.timeout)
    print(f"{'backend':<12} {'run':>3} {'log line':>8} {'ready':>8} {'mask':>8}  first mask by")
    runs = []
    for index in range(args.runs):
        result = one_start(params_file, probe, workdir / f"{backend}-{index}.log", args.timeout)
        if result is None:
            continue
        runs.append(result)
        served = "engine" if result["engine"] else "PyTorch"
        print(f"{backend:<12} {index + 1:>3} {_seconds(result['first_log'])} {_seconds(result['ready'])} "
              f"{_seconds(result['mask'])}  {served}", flush=True)
    if runs:
        medians = [statistics.median(r[key] for r in runs if r[key] is not None)
                   if any(r[key] is not None for r in runs) else None for key in ("first_log", "ready", "mask")]
        engine_runs = sum(r["engine"] for r in runs)
        print(f"{backend:<12} {'med':>3} {''.join(_seconds(m) + ' ' for m in medians)} "
              f"({len(runs)} runs; engine served the first mask in {engine_runs})", flush=True)
    return runs


def _warm_engine(params_file: Path, log_path: Path, timeout: float) -> None:
    """A node run until its log says the engine serves (built and cached) or `timeout`."""
    node = processes.start(processes.node_command(params_file, NAMESPACE), log_path)
    deadline = time.monotonic() + timeout
    try:
        while node.poll() is None and time.monotonic() < deadline:
            if ENGINE_SERVING_TEXT in log_path.read_text(errors="replace"):
                break
            time.sleep(0.5)
        else:
            print(f"warm-up: the engine did not serve within {timeout:g} s:\n{processes.tail(log_path)}")
    finally:
        processes.stop(node)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    workdir = Path(tempfile.mkdtemp(prefix="semla_bench_startup_"))
    backends = [b for b in args.backends.split(",") if b]
    print(f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}  model {args.model} on {args.device}, {args.runs} runs per "
          f"backend; seconds from process start to: first log line, segmenter ready, first mask received")
    camera = processes.start(processes.synthetic_camera_command(
        "day:0", args.rate, args.size, f"/{NAMESPACE}/image", "--wait-subscribers", "0",
        "--min-subscribers", "0"), workdir / "camera.log")
    probe = MaskProbe()
    failed = False
    try:
        for backend in backends:
            failed |= len(run_backend(args, backend, probe, workdir)) < args.runs
    finally:
        probe.close()
        processes.stop(camera)
    print(f"logs in {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
