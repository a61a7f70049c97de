"""Full-size rgb8 frames across processes with best-effort QoS, per Fast DDS transport set-up:
the shipped XML profile (FASTDDS_DEFAULT_PROFILES_FILE), FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, and neither.

    semla-bench large_images [--seconds 3] [--sizes 640x480,1920x1080] [--rates 10,30]

A publisher process and a subscriber process (both in the set-up's environment, as a camera driver and the
node would be) on a domain of their own; the publisher waits until it is matched, publishes `rate x seconds`
frames at `rate`, and the subscriber counts what arrives until 2 s pass without a frame. Prints one row per
set-up, size and rate: frames delivered of published.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from semla_ros.ros.dds_profile import BUILTIN_TRANSPORTS_VARIABLE, LARGE_IMAGE_PROFILE, PROFILE_VARIABLE

SETUPS = {
    "xml profile": {PROFILE_VARIABLE: str(LARGE_IMAGE_PROFILE)},
    "LARGE_DATA": {BUILTIN_TRANSPORTS_VARIABLE: "LARGE_DATA"},
    # the built-in option string with buffers as large as the shipped profile's (Fast DDS >= 2.14)
    "LARGE_DATA_32MB": {BUILTIN_TRANSPORTS_VARIABLE: "LARGE_DATA?max_msg_size=32MB&sockets_size=32MB"},
    "neither": {},
}
QUIET_S = 2.0      # the subscriber stops this long after the last frame
MATCH_TIMEOUT_S = 20.0


def _node(role: str):
    import rclpy
    from rclpy.qos import qos_profile_sensor_data

    rclpy.init()
    return rclpy, rclpy.create_node(f"large_images_{role}"), qos_profile_sensor_data


def publish(width: int, height: int, rate: float, count: int) -> None:
    import numpy as np
    from sensor_msgs.msg import Image

    rclpy, node, qos = _node("pub")
    publisher = node.create_publisher(Image, "large_images", qos)
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = np.random.default_rng(0).integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    rclpy.spin_once(node, timeout_sec=0.5)   # let the match settle on both sides
    start = time.monotonic()
    for k in range(count):
        publisher.publish(msg)
        time.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
    node.destroy_node()
    rclpy.try_shutdown()


def subscribe(expected_bytes: int) -> None:
    from sensor_msgs.msg import Image

    rclpy, node, qos = _node("sub")
    sizes: list[int] = []
    node.create_subscription(Image, "large_images", lambda m: sizes.append(len(m.data)), qos)
    deadline = time.monotonic() + MATCH_TIMEOUT_S + 60
    last = None
    while time.monotonic() < deadline and (last is None or time.monotonic() - last < QUIET_S):
        before = len(sizes)
        rclpy.spin_once(node, timeout_sec=0.05)
        if len(sizes) > before:
            last = time.monotonic()
    print(sum(1 for size in sizes if size == expected_bytes))
    node.destroy_node()
    rclpy.try_shutdown()


def measure(setup: dict, width: int, height: int, rate: float, seconds: float, domain: int) -> tuple[int, int]:
    """(frames delivered, frames published) for one set-up, size and rate."""
    env = {k: v for k, v in os.environ.items() if k not in (PROFILE_VARIABLE, BUILTIN_TRANSPORTS_VARIABLE)}
    env.update(setup, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    count = int(round(rate * seconds))
    role = [sys.executable, "-m", "semla_ros.bench.large_images", "--role"]
    sub = subprocess.Popen(role + ["sub", "--sizes", f"{width}x{height}"], env=env, stdout=subprocess.PIPE,
                           text=True)
    pub = subprocess.Popen(role + ["pub", "--sizes", f"{width}x{height}", "--rates", str(rate), "--seconds",
                                   str(seconds)], env=env)
    try:
        out, _ = sub.communicate(timeout=MATCH_TIMEOUT_S + seconds + 90)
    finally:
        for process in (pub, sub):
            if process.poll() is None:
                process.kill()
            process.wait()
    return int(out.strip() or 0), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench large_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per run")
    parser.add_argument("--sizes", default="640x480,1920x1080", help="WxH list")
    parser.add_argument("--rates", default="10,30", help="frame rates (Hz)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"which of: {', '.join(SETUPS)}")
    parser.add_argument("--domain", type=int, default=150 + os.getpid() % 70, help="ROS_DOMAIN_ID of the runs")
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    rates = [float(rate) for rate in args.rates.split(",")]
    if args.role == "pub":
        publish(*sizes[0], rates[0], int(round(rates[0] * args.seconds)))
        return 0
    if args.role == "sub":
        subscribe(sizes[0][0] * sizes[0][1] * 3)
        return 0
    print(f"{'set-up':<16} {'frame':>10} {'rate':>6} {'delivered':>14}")
    for name in args.setups.split(","):
        for width, height in sizes:
            for rate in rates:
                got, sent = measure(SETUPS[name], width, height, rate, args.seconds, args.domain)
                print(f"{name:<16} {f'{width}x{height}':>10} {rate:>5g}  {got:>4} of {sent:<4} ({got / sent:.0%})",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
