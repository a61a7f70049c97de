"""Demo camera node: plays a domain sequence of the procedural world at a fixed rate.

Publishes, with one shared header per frame:
  image         sensor_msgs/Image rgb8  (what the segmenter sees)
  ground_truth  sensor_msgs/Image mono8 (exact class ids, indices into world.CLASS_NAMES)
Ground truth travels as a parallel topic with the same header, so any consumer (the demo, an
evaluator, rviz) pairs it with the segmenter's mask by stamp, the way it pairs any two topics.
With `frame_log` set, one JSON line per frame (stamp, index, domain, seed) is appended there, so
the demo can say which domain each published mask belongs to.

Run: python -m semla_ros.ros.demo_camera --ros-args -p sequence:="clear:8,fog:9" -p rate_hz:=10.0
"""
from __future__ import annotations

import json
import sys

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from semla_ros.demo.sequence import CAMERA_SEED_BASE, DEFAULT_SEQUENCE, DomainSequence
from semla_ros.demo.world import DEFAULT_SIZE, render
from semla_ros.ros.image_conversion import array_to_image
from semla_ros.ros.process import StopSignals


class DemoCamera(Node):
    """Timer-driven publisher; each tick renders the next frame of the sequence."""

    def __init__(self) -> None:
        super().__init__("demo_camera")
        ro = ParameterDescriptor(read_only=True)
        self.declare_parameter("sequence", DEFAULT_SEQUENCE, ro)
        self.declare_parameter("rate_hz", 10.0, ro)
        self.declare_parameter("height", DEFAULT_SIZE[0], ro)
        self.declare_parameter("width", DEFAULT_SIZE[1], ro)
        self.declare_parameter("seed_base", CAMERA_SEED_BASE, ro)
        self.declare_parameter("frame_id", "demo_camera", ro)
        self.declare_parameter("loop", True, ro)
        self.declare_parameter("frame_log", "", ro)
        self.declare_parameter("wait_for_subscribers", 0, ParameterDescriptor(
            read_only=True, description="hold frame 0 until `image` has this many subscribers"))
        p = {name: self.get_parameter(name).value for name in
             ("sequence", "rate_hz", "height", "width", "seed_base", "frame_id", "loop", "frame_log",
              "wait_for_subscribers")}
        self.wait_for_subscribers = int(p["wait_for_subscribers"])
        self.sequence = DomainSequence.parse(p["sequence"], p["rate_hz"])  # ValueError: clear reason
        self.size = (int(p["height"]), int(p["width"]))
        self.seed_base, self.frame_id, self.loop = int(p["seed_base"]), p["frame_id"], bool(p["loop"])
        self.log_file = open(p["frame_log"], "a", buffering=1) if p["frame_log"] else None
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.truth_pub = self.create_publisher(Image, "ground_truth", qos)
        self.index = 0
        self.finished = False
        self.timer = self.create_timer(1.0 / self.sequence.rate_hz, self._tick)
        self.get_logger().info(
            f"playing {self.sequence.num_frames} frames ({self.sequence.duration_s:.0f} s) at "
            f"{self.sequence.rate_hz} Hz, {self.size[1]}x{self.size[0]}: {p['sequence']}")

    def _tick(self) -> None:
        if self.index == 0 and self.image_pub.get_subscription_count() < self.wait_for_subscribers:
            return  # discovery still running: frame 0 waits so nobody misses the start
        if not self.loop and self.index >= self.sequence.num_frames:
            if not self.finished:
                self.finished = True
                self.get_logger().info("sequence finished")
            return
        domain = self.sequence.domain_at(self.index)
        seed = self.sequence.seed_at(self.index, self.seed_base)
        frame = render(domain, seed, self.size)
        stamp = self.get_clock().now().to_msg()
        header = Image().header
        header.stamp, header.frame_id = stamp, self.frame_id
        self.image_pub.publish(array_to_image(frame.image, "rgb8", header))
        self.truth_pub.publish(array_to_image(frame.labels, "mono8", header))
        if self.log_file is not None:
            self.log_file.write(json.dumps({"sec": stamp.sec, "nanosec": stamp.nanosec, "index": self.index,
                                            "domain": domain, "seed": seed}) + "\n")
        self.index += 1

    def destroy_node(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Spin until SIGINT/SIGTERM. Our handlers only set an event (semla_ros.ros.process): launch forwards a
    second SIGINT while the node is torn down, and rclpy's handler raised KeyboardInterrupt inside
    destroy_node (exit code -2)."""
    stop = StopSignals()
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = DemoCamera()
    except ValueError as exc:
        print(f"demo_camera: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        stop.restore()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
