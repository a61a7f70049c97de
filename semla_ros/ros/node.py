"""The `semla_segmenter` ROS 2 node: topics, services, parameters and threads around SemlaSegmenter.

Why this shape: nothing slow runs in a ROS callback. The image callback converts the frame and drops
it into a one-slot mailbox; one inference thread owns the segmenter, always takes the newest frame
and publishes everything for it with the input's header; the segmenter adapts on its own worker and
swaps between frames. Configuration problems (missing checkpoint, absent library, bad parameter)
are logged once and shown in /diagnostics while the node stays up, so a launch file never
crash-loops.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data, qos_profile_system_default)
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray

from semla_ros.msg import AdapterFusion, SupportScore
from semla_ros.ros import parameters
from semla_ros.ros.dds_profile import with_large_image_transport
from semla_ros.engine import build_engine
from semla_ros.ros.diagnostics import LEVEL_BYTES, Health, NodeStats, diagnostic_array
from semla_ros.ros.image_conversion import BadFrame, compressed_to_rgb, image_to_rgb, mask_to_image, rgb_to_image
from semla_ros.ros.mailbox import LatestFrameMailbox
from semla_ros.ros.overlay import blend, palette

NODE_NAME = "semla_segmenter"
LOG_THROTTLE_S = 5.0


@dataclass
class Frame:
    """A converted frame waiting for the inference thread."""

    rgb: np.ndarray
    header: Any
    received: float       # time.monotonic() at callback entry
    queued: float         # time.monotonic() when put into the mailbox
    conversion_ms: float
    clock_s: float = 0.0  # the node clock (ROS time: sim time with use_sim_time) at callback entry


def frame_seconds(header, clock_s: float, source: str) -> tuple[float, bool]:
    """The frame's time for the debouncer: its header stamp, or the node clock at arrival when
    `source` is 'clock' or the header carries no stamp (0). Returns (seconds, fell back to the clock)."""
    stamp = header.stamp
    if source == "header" and (stamp.sec or stamp.nanosec):
        return stamp.sec + stamp.nanosec * 1e-9, False
    return clock_s, source == "header"


def qos_profile(name: str, depth: int) -> QoSProfile:
    if name == "sensor_data":
        base = qos_profile_sensor_data
    elif name == "default":
        base = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    else:
        base = qos_profile_system_default
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=base.reliability,
                      durability=base.durability)


FUSION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SemlaSegmenterNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        values, problems = parameters.declare(self)   # rclpy stores the values; the node keeps no copy
        self._stats = NodeStats()
        self._health = Health()
        self._mailbox = LatestFrameMailbox()
        self._setup_lock = threading.Lock()   # orders parameter changes against installing the segmenter
        self._segmenter = None
        self._unstamped_said = False
        self._palettes: dict[int, np.ndarray] = {}
        self._state = "loading model"
        self._health.set("parameters", [("error", f"invalid parameter {p}") for p in problems])
        for problem in problems:
            self.get_logger().error(f"invalid parameter {problem}")

        out_qos = qos_profile(values["output_qos"], values["output_qos_depth"])
        self._mask_pub = self.create_publisher(Image, "mask", out_qos)
        self._support_pub = self.create_publisher(SupportScore, "support_score", out_qos)
        self._overlay_pub = self.create_publisher(Image, "overlay", out_qos)
        self._fusion_pub = self.create_publisher(AdapterFusion, "fusion", FUSION_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = qos_profile(values["input_qos"], values["input_qos_depth"])
        input_group = MutuallyExclusiveCallbackGroup()
        if values["input_transport"] == "compressed":
            self._sub = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed,
                                                 in_qos, callback_group=input_group)
        else:
            self._sub = self.create_subscription(Image, "image", self._on_image, in_qos,
                                                 callback_group=input_group)
        # Services may wait for the frame in flight; diagnostics must not wait for them.
        service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/adapt_now", self._on_adapt_now, callback_group=service_group)
        self.create_service(Trigger, "~/reload_library", self._on_reload_library, callback_group=service_group)
        self.create_timer(values["diagnostics_period_s"], self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._thread = threading.Thread(target=self._run, args=(problems,), name="semla-inference", daemon=True)
        self._thread.start()

    def _value(self, name: str):
        return self.get_parameter(name).value

    def _values(self) -> dict:
        """Our parameters' values in force (rclpy's store)."""
        return {name: self._value(name) for name in parameters.SPEC_BY_NAME}

    def _palette(self, num_classes: int) -> np.ndarray:
        colours = self._palettes.get(num_classes)
        if colours is None:
            colours = self._palettes[num_classes] = palette(num_classes)
        return colours

    # ------------------------------------------------------------------ input callbacks
    def _on_image(self, msg: Image) -> None:
        self._accept(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._accept(msg, compressed_to_rgb)

    def _accept(self, msg, convert) -> None:
        received = time.monotonic()
        clock_s = self.get_clock().now().nanoseconds * 1e-9
        self._stats.frame_received()
        if self._segmenter is None:
            self._stats.frame_not_ready()
            return
        try:
            rgb = convert(msg, self._value("max_input_pixels"))
        except BadFrame as bad:
            self._stats.bad_frame(bad.kind)
            self.get_logger().warning(f"dropped bad frame ({bad}); {self._stats.bad_total} so far",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        queued = time.monotonic()
        self._mailbox.put(Frame(rgb, msg.header, received, queued, (queued - received) * 1e3, clock_s))

    # ------------------------------------------------------------------ inference thread
    def _run(self, problems) -> None:
        if problems:
            self._state = "not running: invalid parameters"
            return
        try:
            build = build_engine(parameters.engine_spec(self._values()))
        except Exception as error:  # an unexpected failure must still leave the node up and reporting
            self._report("model", [("error", f"building the segmenter failed: {type(error).__name__}: {error}")])
            self._state = "not running: build failed"
            return
        for source in ("model", "backend", "navigator", "library"):
            entries = [(level, message) for s, level, message in build.notes if s == source]
            self._report(source, entries)
        if build.segmenter is None:
            self._state = "not running: no model"
            return
        with self._setup_lock:
            self._catch_up(build.segmenter)
            self._segmenter = build.segmenter
        self._state = "running"
        self.get_logger().info(f"segmenter ready ({', '.join(f'{k}: {v}' for k, v in build.info.items())})")

        while not self._mailbox.closed:
            frame = self._mailbox.take(timeout=0.25)
            if frame is not None:
                self._process(frame)

    def _report(self, source: str, entries: list[tuple[str, str]]) -> None:
        """Replace one source's health entries and log the problems among them once."""
        self._health.set(source, entries)
        for level, message in entries:
            if level == "error":
                self.get_logger().error(message)
            elif level == "warn":
                self.get_logger().warning(message)

    def _catch_up(self, segmenter) -> None:
        """Apply the live parameters in force now (some may have changed while the model was built)."""
        values = self._values()
        segmenter.update_settings(**parameters.settings_changes(values))
        classes = parameters.clean_classes(values["classes"])
        if classes != segmenter.predictor.class_names:
            segmenter.set_classes(classes)

    def _process(self, frame: Frame) -> None:
        taken = time.monotonic()
        segmenter = self._segmenter
        time_s, unstamped = frame_seconds(frame.header, frame.clock_s, self._value("frame_time"))
        if unstamped and not self._unstamped_said:   # said once: log + diagnostics WARN
            self._unstamped_said = True
            self._report("frame_time", [("warn", "frames arrive without a header stamp: shift timing uses the "
                                                 "node clock at arrival instead")])
        try:
            result = segmenter.process(frame.rgb, stamp=frame.header, time_s=time_s)
            swaps, failed, active = segmenter.swap_count, segmenter.failed_fusions, segmenter.active
        except Exception as error:  # keep serving the next frame; the reason goes to the log
            self._stats.bad_frame("inference_error")
            self.get_logger().error(f"inference failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        processed = time.monotonic()
        num_classes = len(result.classes)
        try:
            self._mask_pub.publish(mask_to_image(result.class_ids, num_classes, frame.header))
            self._support_pub.publish(self._support_message(result, frame.header))
            if result.fusion is not None:
                self._publish_fusion(result.fusion, frame.header)
            if self._overlay_pub.get_subscription_count() > 0:  # only computed for a viewer
                overlay = blend(frame.rgb, result.class_ids, self._palette(num_classes), self._value("overlay_alpha"))
                self._overlay_pub.publish(rgb_to_image(overlay, frame.header))
                self._stats.overlays_published += 1
        except Exception as error:
            self._stats.publish_errors += 1
            self.get_logger().error(f"publishing failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        published = time.monotonic()
        latency_ms = (published - frame.received) * 1e3
        self._stats.frame_processed(
            conversion_ms=frame.conversion_ms, queue_ms=(taken - frame.queued) * 1e3,
            model_ms=result.model_ms, process_ms=(processed - taken) * 1e3,
            publish_ms=(published - processed) * 1e3, latency_ms=latency_ms,
            overhead_ms=latency_ms - result.model_ms)
        self._stats.set_engine(
            support=f"{result.support:.4f}", ema_distance=f"{result.ema_distance:.4f}",
            switch_threshold=f"{result.threshold:.4f}", consecutive_over_threshold=result.consecutive,
            swaps=swaps, failed_fusions=failed, active_adapters=self._describe_active(active),
            top_adapter=result.supports.top_adapter, time_resets=segmenter.time_resets)

    @staticmethod
    def _describe_active(active) -> str:
        if active is None or not active.adapters:
            return "none (base model)"
        return ", ".join(f"{n}:{w:.3f}" for n, w in zip(active.adapters, active.weights))

    @staticmethod
    def _support_message(result, header) -> SupportScore:
        return SupportScore(
            header=header, support_score=float(result.support), ema_distance=float(result.ema_distance),
            switch_threshold=float(result.threshold),
            consecutive_over_threshold=max(0, int(result.consecutive)),
            active_adapters=max(0, int(result.active_adapters)), embedded_this_frame=bool(result.embedded),
            scale_free_support=float(result.supports.scale_free), active_support=float(result.supports.active),
            active_scale_free_support=float(result.supports.active_scale_free),
            top_adapter=result.supports.top_adapter, active_is_top=bool(result.supports.active_is_top))

    def _publish_fusion(self, event, frame_header) -> None:
        if not event.ok:
            self.get_logger().error(f"adaptation ({event.reason}) failed, previous model stays active: "
                                    f"{event.error}")
            return
        header = event.stamp if event.stamp is not None and hasattr(event.stamp, "frame_id") else frame_header
        self._fusion_pub.publish(AdapterFusion(
            header=header, adapter_names=list(event.adapters), weights=[float(w) for w in event.weights],
            distances=[float(d) for d in event.distances], support_score=float(event.support),
            reason=event.reason, fusion_ms=float(event.duration_ms), swap_count=int(event.swap_count)))
        self.get_logger().info(f"swap {event.swap_count} ({event.reason}, {event.duration_ms:.0f} ms): "
                               + ", ".join(f"{n} {w:.2f}" for n, w in zip(event.adapters, event.weights)))

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate our parameters; push live ones into the running segmenter. rclpy stores the values
        (and owns the parameters it declares itself, such as use_sim_time)."""
        changes = {p.name: p.value for p in params if p.name in parameters.SPEC_BY_NAME}
        reason = parameters.validate(changes)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        with self._setup_lock:
            if self._segmenter is not None:
                reason = self._apply_live(self._segmenter, changes)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_live(self, segmenter, changes) -> str | None:
        """Push changes into the segmenter; undo the settings if a later step fails."""
        settings = parameters.settings_changes(changes)
        previous = segmenter.settings
        try:
            if settings:
                segmenter.update_settings(**settings)
            if "classes" in changes:
                classes = parameters.clean_classes(changes["classes"])
                if classes != segmenter.predictor.class_names:
                    segmenter.set_classes(classes)
        except ValueError as error:
            segmenter.update_settings(**{name: getattr(previous, name) for name in settings})
            return str(error)
        return None

    # ------------------------------------------------------------------ services
    def _on_adapt_now(self, request, response):
        segmenter = self._segmenter
        if segmenter is None:
            response.success, response.message = False, f"segmenter not running ({self._state})"
        elif segmenter.library is None:
            response.success, response.message = False, "no adapter library loaded"
        else:
            segmenter.request_adaptation("manual")
            response.success = True
            response.message = "adaptation requested; the swap is published on 'fusion'"
        return response

    def _on_reload_library(self, request, response):
        root = self._value("library_path")
        if not root:
            response.success, response.message = False, "library_path is '' (set it and restart)"
            return response
        segmenter = self._segmenter
        if segmenter is None:
            response.success, response.message = False, f"segmenter not running ({self._state})"
            return response
        try:  # the segmenter reads the files off its frame lock and swaps the snapshot between frames
            count, skipped = segmenter.reload_library(root)
        except Exception as error:  # the old library stays active; say why
            response.success = False
            response.message = f"reload of {root} failed, previous library kept: {error}"
            self.get_logger().error(response.message)
            return response
        response.success = True
        response.message = f"{count} adapters loaded from {root}, {len(skipped)} skipped"
        self._report("library", [("ok", response.message)] +
                     [("warn", f"adapter {name} skipped: {reason}") for name, reason in skipped])
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        level, message = self._health.worst()
        if level != "error" and self._state != "running":
            level, message = "warn", self._state
        elif level == "ok":
            message = "running"
        rows = [("state", self._state)] + self._stats.values(self._mailbox.replaced) + self._health.rows()
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                f"{self.get_fully_qualified_name()}: segmenter",
                                                LEVEL_BYTES[level], message, rows))

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the inference thread and the segmenter's worker; bounded so shutdown stays < 2 s.

        A frame already inside the model is not waited for beyond `timeout_s` (a slow model can
        take seconds); the thread is a daemon and the process exits without it.
        """
        self._mailbox.close()
        self._thread.join(timeout_s)
        if self._segmenter is not None and not self._thread.is_alive():
            self._segmenter.close()


def main(argv: list[str] | None = None, exit_process: bool = True) -> int:
    """Spin until SIGINT/SIGTERM, then stop threads and leave within ~2 s.

    Our own signal handlers only set a flag: rclpy's handler would raise KeyboardInterrupt at a
    random point of the teardown (seen inside destroy_node), which is not a clean shutdown.
    After the teardown (threads joined, ROS entities destroyed, context shut down) the process
    leaves with os._exit: interpreter finalisation with torch loaded took 0.5-3 s here, longer
    than the whole shutdown budget, and releases nothing the OS does not release anyway.
    """
    stop = threading.Event()
    # The node's own full-size rgb8 overlay exceeds Fast DDS's default shared-memory segment.
    with_large_image_transport()
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = SemlaSegmenterNode()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.get_logger().info("shutting down")
        node.close()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if exit_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
