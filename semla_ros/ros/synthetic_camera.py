"""A synthetic camera node: streams frames of named visual domains on a schedule.

Why: the node's tests and `semla-bench node` need a real publisher in its own process that
produces a domain change on cue, at a chosen rate, size and encoding, without a dataset. Each
domain is one street of the demo world (`demo/world.py`) under that domain's light and weather
(day = the world's clear; night, fog, dusk, rain, snow, tunnel), plus a little per-frame noise so
consecutive frames are not byte-identical. The schedule is a demo sequence (`demo/sequence.py`).

    python -m semla_ros.ros.synthetic_camera --schedule day:5,night:5 --rate 10 --size 640x480

A duration of 0 means "until the process receives SIGUSR1", so a test can move to the next
domain exactly when it has seen what it wanted in the current one.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import numpy as np

from semla_ros.demo import world
from semla_ros.demo.sequence import CAMERA_SEED_BASE, DomainSequence

# The camera's domain names: the demo world's, and "day" for its clear daylight (the name the node's
# tests and `semla-bench node --cycle` use).
ALIASES = {"day": "clear"}
DOMAINS: tuple[str, ...] = (*ALIASES, *world.DOMAINS)
STREET_SEED = CAMERA_SEED_BASE   # every domain shows this one street of the demo world


def render(domain: str, height: int, width: int) -> np.ndarray:
    """The domain's base frame, HxWx3 uint8 RGB (deterministic): the demo world's street under its light."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return world.render(ALIASES.get(domain, domain), STREET_SEED, (height, width)).image


class FrameSource:
    """Base frame + one of a few precomputed noise patterns, so producing a frame costs a copy."""

    def __init__(self, height: int, width: int, noise: int = 4, seed: int = 0, patterns: int = 8):
        rng = np.random.default_rng(seed)
        self.height, self.width = height, width
        self._noise = [rng.integers(-noise, noise + 1, size=(height, width, 3)).astype(np.int16)
                       for _ in range(patterns)] if noise else []
        self._bases: dict[str, np.ndarray] = {}

    def frame(self, domain: str, index: int) -> np.ndarray:
        base = self._bases.get(domain)
        if base is None:
            base = self._bases[domain] = render(domain, self.height, self.width).astype(np.int16)
        if not self._noise:
            return base.astype(np.uint8)
        return np.clip(base + self._noise[index % len(self._noise)], 0, 255).astype(np.uint8)


def parse_schedule(text: str, rate: float = 10.0) -> list[tuple[str, float]]:
    """'day:5,night:0' -> [('day', 5.0), ('night', 0.0)] (seconds per domain; 0 = until SIGUSR1)."""
    sequence = DomainSequence.parse(text, rate, domains=DOMAINS, open_ended=True)
    return [(segment.domain, segment.seconds) for segment in sequence.segments]


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "mono8":
        return np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8))
    raise ValueError(f"synthetic camera encodes rgb8, bgr8 or mono8, not {encoding}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="day:10,night:10", help="<domain>:<seconds>,... in order")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--size", default="128x96", help="WIDTHxHEIGHT")
    parser.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8", "mono8"))
    parser.add_argument("--frame-id", default="camera", help="header.frame_id; '{domain}' is replaced")
    parser.add_argument("--topic", default="image")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS instead of sensor data")
    parser.add_argument("--wait-subscribers", type=float, default=10.0,
                        help="seconds to wait for subscribers before streaming")
    parser.add_argument("--min-subscribers", type=int, default=1,
                        help="subscribers to wait for (e.g. the node and a test's recorder)")
    parser.add_argument("--noise", type=int, default=4)
    args, ros_args = parser.parse_known_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from semla_ros.ros.image_conversion import array_to_image

    width, height = (int(v) for v in args.size.lower().split("x"))
    schedule = parse_schedule(args.schedule, args.rate)

    rclpy.init(args=[sys.argv[0], *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    stop, advance = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: advance.set())
    node = rclpy.create_node("synthetic_camera")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if args.reliable else qos_profile_sensor_data
    publisher = node.create_publisher(Image, args.topic, qos)
    source = FrameSource(height, width, noise=args.noise)
    deadline = time.monotonic() + args.wait_subscribers
    while (publisher.get_subscription_count() < args.min_subscribers and time.monotonic() < deadline
           and not stop.is_set()):
        time.sleep(0.05)
    period = 1.0 / args.rate
    index = 0
    next_time = time.monotonic()
    try:
        for domain, seconds in schedule:
            if stop.is_set():
                break
            advance.clear()
            end = time.monotonic() + seconds if seconds > 0 else float("inf")
            while time.monotonic() < end and not advance.is_set() and not stop.is_set():
                header_frame = args.frame_id.replace("{domain}", domain)
                image = encode(source.frame(domain, index), args.encoding)
                header = Header(frame_id=header_frame, stamp=node.get_clock().now().to_msg())
                publisher.publish(array_to_image(image, args.encoding, header))
                index += 1
                next_time += period
                time.sleep(max(0.0, next_time - time.monotonic()))
            print(f"{domain}: published up to frame {index}", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"published {index} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
