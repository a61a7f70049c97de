"""One recorded pass of the demo: the node and the demo camera as separate processes (semla_ros.ros.processes),
and a listener in this process that records what they publish into a demo Recording (`semla-demo`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..demo.build_assets import Assets
from ..demo.node_parameters import node_parameters, write_params_file
from ..demo.run_analysis import Recording
from ..demo.sequence import DomainSequence
from . import processes
from .dds_profile import with_large_image_transport

NODE_NAME = "semla_segmenter"


def _stamp(header) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def _as_array(msg, channels: int) -> np.ndarray:
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    row = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return row[:, : msg.width * channels].reshape(shape).copy()


class DemoRecorder:
    """An rclpy node (own context) subscribed to the camera's image and ground truth under /demo and the node's
    mask, support score and fusion events under /semla, filling a Recording."""

    def __init__(self, rec: Recording):
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from semla_ros.msg import AdapterFusion, SupportScore

        self.rec = rec
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("semla_demo_recorder", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        sensor = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability)
        self.node.create_subscription(Image, "/demo/image", self._on_image, reliable)
        self.node.create_subscription(Image, "/demo/ground_truth", self._on_truth, reliable)
        self.node.create_subscription(Image, "/semla/mask", self._on_mask, sensor)
        self.node.create_subscription(SupportScore, "/semla/support_score", self._on_support, sensor)
        self.node.create_subscription(AdapterFusion, "/semla/fusion", self._on_fusion, latched)

    def _on_image(self, m) -> None:
        self.rec.images[_stamp(m.header)] = _as_array(m, 3)

    def _on_truth(self, m) -> None:
        self.rec.truths[_stamp(m.header)] = _as_array(m, 1)

    def _on_mask(self, m) -> None:
        self.rec.masks[_stamp(m.header)] = _as_array(m, 1)

    def _on_support(self, m) -> None:
        self.rec.support[_stamp(m.header)] = (m.support_score, m.ema_distance, m.switch_threshold,
                                              m.consecutive_over_threshold, m.active_adapters, m.scale_free_support,
                                              m.active_scale_free_support, float(m.active_is_top))

    def _on_fusion(self, m) -> None:
        self.rec.fusions.append((_stamp(m.header), list(m.adapter_names), list(m.weights), list(m.distances),
                                 m.support_score, m.reason, m.fusion_ms, m.swap_count))

    def spin_once(self, timeout_s: float) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def node_ready(self, node_log: Path) -> bool:
        """The node subscribes to /demo/image (beside this recorder), publishes masks, and has logged that its
        engine (model, library, navigator) is built."""
        return (self.node.count_subscribers("/demo/image") >= 2 and self.node.count_publishers("/semla/mask") >= 1
                and "segmenter ready" in node_log.read_text(errors="replace"))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def record(assets: Assets, sequence: DomainSequence, sequence_text: str, workdir: Path, settings: dict,
           ready_timeout: float = 90.0, log=print) -> tuple[Recording, list[dict]]:
    """Runs camera + node as separate processes and records one pass of the sequence; returns the recording
    and the camera's frame log (one dict per frame: index, domain, stamp). RuntimeError says what failed."""
    rec = Recording()
    frame_log = workdir / "frames.jsonl"
    node_log, camera_log = workdir / "node.log", workdir / "camera.log"
    env = with_large_image_transport(processes.child_env())
    recorder = DemoRecorder(rec)
    node = camera = None
    try:
        params_file = write_params_file(workdir / "node_params.yaml", node_parameters(assets, settings=settings))
        node = processes.start(processes.node_command(params_file, "semla", "-r", "image:=/demo/image"), node_log,
                               env=env)
        log(f"started {NODE_NAME} (pid {node.pid}); waiting for it to subscribe to /demo/image")
        _wait_ready(recorder, node, node_log, ready_timeout)
        camera = processes.start(processes.demo_camera_command(
            "demo", sequence=sequence_text, rate_hz=sequence.rate_hz, loop="false", frame_log=frame_log,
            wait_for_subscribers=2), camera_log, env=env)
        log(f"started demo camera (pid {camera.pid}): {sequence_text} "
            f"({sequence.duration_s:.0f} s at {sequence.rate_hz:g} Hz); recording")
        _record_pass(recorder, sequence, ((node, NODE_NAME, node_log), (camera, "demo camera", camera_log)), log)
    finally:
        processes.stop(camera)
        processes.stop(node)
        recorder.close()
    frames = [json.loads(line) for line in frame_log.read_text().splitlines()] if frame_log.exists() else []
    return rec, frames


def _wait_ready(recorder: DemoRecorder, node, node_log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not recorder.node_ready(node_log):
        recorder.spin_once(0.2)
        problem = processes.exited(node, NODE_NAME, node_log)
        if problem:
            raise RuntimeError(problem)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{NODE_NAME} not ready after {timeout:.0f} s:\n{processes.tail(node_log)}")


def _record_pass(recorder: DemoRecorder, sequence: DomainSequence, watched, log) -> None:
    """Spin until the camera's whole sequence was heard (plus 1.5 s for the last masks) or one pass plus 4 s
    has gone by; frames lost in transit do not hold it up. A process that exits is an error."""
    rec = recorder.rec
    end = None
    started = last_report = time.monotonic()
    hard_end = started + sequence.duration_s + 4.0
    while True:
        recorder.spin_once(0.05)
        for proc, name, path in watched:
            problem = processes.exited(proc, name, path)
            if problem:
                raise RuntimeError(problem)
        if end is None and len(rec.truths) >= sequence.num_frames:
            end = time.monotonic() + 1.5  # let the last masks arrive
        if (end is not None and time.monotonic() > end) or time.monotonic() > hard_end:
            return
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"  {len(rec.truths)}/{sequence.num_frames} frames, {len(rec.masks)} masks, "
                f"{len(rec.fusions)} swaps")
        if len(rec.truths) == 0 and time.monotonic() > started + 30:
            raise RuntimeError(f"no frames from the demo camera:\n{processes.tail(watched[1][2])}")
