"""`semla-bench node`: what the ROS node adds around the model, and whether it stays flat under load.

Runs the real node (`python -m semla_ros.ros.node`, tiny CAT-Seg with random weights by default)
in its own process and the synthetic camera at 30 Hz, 640x480 rgb8, in another, against a model
far slower than the camera, for --duration seconds (default 120). Prints:
  encode   mask -> sensor_msgs/Image for a 640x480 mask (in this process, no model)
  node     per processed frame, from the node's own clocks (/diagnostics, means since start):
           conversion, mailbox wait, model, non-model processing, mask+score encode+publish,
           receipt->publish latency and "overhead" = latency - model (with and without mailbox wait)
  soak     every ~10% of the run: node RSS, age of the published masks (now - input stamp),
           frames processed and dropped as stale; then the RSS and age trends (flat = no queue
           building up, no leak)
  shutdown seconds from SIGINT to the node's exit
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from semla_ros.ros.dds_profile import with_large_image_transport

REPO = Path(__file__).resolve().parents[2]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench node", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="soak seconds (default 120)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--size", default="640x480", help="camera WIDTHxHEIGHT")
    parser.add_argument("--model-config", default="tiny", help="node parameter model_config")
    parser.add_argument("--checkpoint", default="", help="node parameter checkpoint ('' = random weights)")
    parser.add_argument("--library", default="", help="node parameter library_path ('' = base model)")
    parser.add_argument("--navigator", default="tower", help="node parameter navigator")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with_large_image_transport()  # 640x480 rgb8 frames exceed Fast DDS's default SHM segment
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    width, height = (int(v) for v in args.size.lower().split("x"))

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    encode_ms, mask_bytes = _encode_timing(width, height)
    print(f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}  input {width}x{height} rgb8 at {args.rate:g} Hz, "
          f"model {args.model_config} on {args.device}, soak {args.duration:g} s")
    print(f"encode   mask_to_image {width}x{height} mono8 ({mask_bytes / 1e3:.0f} kB): {encode_ms:.3f} ms")

    workdir = Path(tempfile.mkdtemp(prefix="semla_bench_node_"))
    params = dict(model_config=args.model_config, checkpoint=args.checkpoint,
                  allow_random_weights=not args.checkpoint, library_path=args.library,
                  navigator=args.navigator, device=args.device, diagnostics_period_s=1.0)
    (workdir / "params.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    node_log = open(workdir / "node.log", "w")
    node = subprocess.Popen([sys.executable, "-m", "semla_ros.ros.node", "--ros-args", "--params-file",
                             str(workdir / "params.yaml"), "-r", "__ns:=/bench"],
                            stdout=node_log, stderr=subprocess.STDOUT, env=env)
    camera = None
    rclpy.init()
    probe = rclpy.create_node("bench_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    ages: list[tuple[float, float]] = []   # (time since soak start, age of the published mask in s)
    diagnostics: list = []

    def on_mask(msg):
        now = probe.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        ages.append((time.monotonic(), now - stamp))

    probe.create_subscription(Image, "/bench/mask", on_mask, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)

    def diag() -> dict[str, str]:
        return {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)

    try:
        deadline = time.monotonic() + 180
        while diag().get("state") != "running":
            if node.poll() is not None or time.monotonic() > deadline:
                print("node did not come up:\n" + (workdir / "node.log").read_text())
                return 1
            spin(0.2)
        camera = subprocess.Popen(
            [sys.executable, "-m", "semla_ros.ros.synthetic_camera", "--schedule", "day:0", "--rate",
             str(args.rate), "--size", args.size, "--topic", "/bench/image"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        start = time.monotonic()
        samples = []  # (t, rss MB, masks so far, processed, stale)
        step = max(1.0, args.duration / 10)
        print(f"{'t s':>6} {'rss MB':>8} {'masks':>6} {'age mean s':>10} {'age max s':>9} {'model s':>7} "
              f"{'processed':>9} {'stale':>6} {'in Hz':>6} {'out Hz':>6}")
        last_index = 0
        while time.monotonic() - start < args.duration:
            spin(min(step, args.duration - (time.monotonic() - start)))
            t = time.monotonic() - start
            window = [age for _, age in ages[last_index:]]
            last_index = len(ages)
            d = diag()
            rss = _rss_mb(node.pid)
            samples.append((t, rss, window))
            print(f"{t:6.0f} {rss:8.1f} {len(ages):6d} "
                  f"{statistics.fmean(window) if window else float('nan'):10.2f} "
                  f"{max(window) if window else float('nan'):9.2f} "
                  f"{float(d.get('model_ms_mean', 'nan')) / 1e3:7.2f} {d.get('frames_processed', '?'):>9} "
                  f"{d.get('frames_dropped_stale', '?'):>6} {d.get('input_rate_hz', '?'):>6} "
                  f"{d.get('output_rate_hz', '?'):>6}")
        camera.send_signal(signal.SIGINT)
        camera.wait(10)
        spin(1.5)
        d = diag()
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
        stop = time.monotonic()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
        shutdown_s = time.monotonic() - stop
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
        node_log.close()

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
    usable = [(t, rss, w) for t, rss, w in samples if t >= 0.2 * args.duration]  # after warm-up
    if len(usable) >= 2:
        rss_slope = _linear_slope([t for t, _, _ in usable], [r for _, r, _ in usable]) * 60
        age_points = [(t, statistics.fmean(w)) for t, _, w in usable if w]
        age_slope = _linear_slope([t for t, _ in age_points], [a for _, a in age_points]) * 60
        rss_values = [r for _, r, _ in usable]
        print(f"soak     RSS after warm-up (t >= {0.2 * args.duration:.0f} s): first {rss_values[0]:.1f}, "
              f"min {min(rss_values):.1f}, max {max(rss_values):.1f}, last {rss_values[-1]:.1f} MB; "
              f"linear trend {rss_slope:+.1f} MB/min")
        print(f"soak     mask age: trend {age_slope:+.3f} s/min, max {max(a for _, a in ages):.2f} s "
              f"(a queue would grow by ~{args.rate:.0f} frames/s; age stays ~ model time + one frame)")
    print(f"shutdown SIGINT -> exit {shutdown_s:.2f} s (exit code {node.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
