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
import queue
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
from rclpy.qos import qos_profile_parameters
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray

from semla_ros.msg import AdapterFusion, ClassMap, CoverageStatus, SupportScore
from semla_ros.core.coverage import GAP, CoverageMonitor
from semla_ros.ros import parameters
from semla_ros.ros.dds_profile import with_large_image_transport
from semla_ros.engine import build_engine
from semla_ros.ros.background import BackgroundJob
from semla_ros.ros.diagnostics import LEVEL_BYTES, Health, NodeStats, diagnostic_array
from semla_ros.ros.guard import CallbackGuard
from semla_ros.ros.image_conversion import (BadFrame, compressed_to_rgb, image_to_rgb, mask_encoding, mask_to_image,
                                            rgb_to_image)
from semla_ros.ros.log_bridge import route_python_logging
from semla_ros.ros.mailbox import LatestFrameMailbox
from semla_ros.ros.overlay import blend, palette

NODE_NAME = "semla_segmenter"
LOG_THROTTLE_S = 5.0
RELOAD_REPLY_WAIT_S = 2.0   # a reload still running after this is answered "in progress"
# Our services queue a flood of requests (depth 1000, as rclpy's parameter services) instead of dropping them.
SERVICE_QOS = qos_profile_parameters


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
CLASS_MAP_QOS = FUSION_QOS   # late subscribers get the vocabulary in force
FRAME_LOG_THROTTLE_S = 1.0


class SemlaSegmenterNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        route_python_logging(self.get_logger())   # the engine's `logging` records show up in the node's log
        values, problems = parameters.declare(self)   # rclpy stores the values; the node keeps no copy
        self._stats = NodeStats()
        self._health = Health()
        self._guard = CallbackGuard(self._stats, self._health, self.get_logger())
        self._mailbox = LatestFrameMailbox()
        self._live_changes: queue.SimpleQueue = queue.SimpleQueue()   # stored parameter changes, in order
        self._reload = BackgroundJob("semla-reload")
        self._segmenter = None
        self._backend_status = None           # the engine backend's last (level, message), reported on change
        self._coverage: CoverageMonitor | None = None
        self._coverage_state = None
        self._unstamped_said = False
        self._palettes: dict[int, np.ndarray] = {}
        self._class_map: tuple[tuple[str, ...], int] = ((), 0)   # (vocabulary published last, its version)
        self._unusable_logged: set[str] = set()
        self._state = "loading model"
        self._health.set("parameters", [("error", f"invalid parameter {p}") for p in problems])
        for problem in problems:
            self.get_logger().error(f"invalid parameter {problem}")

        out_qos = qos_profile(values["output_qos"], values["output_qos_depth"])
        self._mask_pub = self.create_publisher(Image, "mask", out_qos)
        self._support_pub = self.create_publisher(SupportScore, "support_score", out_qos)
        self._overlay_pub = self.create_publisher(Image, "overlay", out_qos)
        self._fusion_pub = self.create_publisher(AdapterFusion, "fusion", FUSION_QOS)
        self._class_map_pub = self.create_publisher(ClassMap, "class_map", CLASS_MAP_QOS)
        self._coverage_pub = self.create_publisher(CoverageStatus, "coverage", out_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = qos_profile(values["input_qos"], values["input_qos_depth"])
        input_group = MutuallyExclusiveCallbackGroup()
        if values["input_transport"] == "compressed":
            self._sub = self.create_subscription(CompressedImage, "image/compressed",
                                                 self._guard.callback("image", self._on_compressed),
                                                 in_qos, callback_group=input_group)
        else:
            self._sub = self.create_subscription(Image, "image", self._guard.callback("image", self._on_image),
                                                 in_qos, callback_group=input_group)
        # Each service in its own group: none waits for a frame, a reload or another service.
        self.create_service(Trigger, "~/adapt_now", self._on_adapt_now, qos_profile=SERVICE_QOS,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/reload_library", self._on_reload_library, qos_profile=SERVICE_QOS,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(values["diagnostics_period_s"],
                          self._guard.callback("diagnostics", self._publish_diagnostics),
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._guard.services_of(self)   # after the last service: ours and rclpy's parameter services

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
        try:
            self._catch_up(build.segmenter)
        except (ValueError, RuntimeError) as error:   # keep running on the values the model was built with
            self._report("parameters", [("error", f"live parameters changed while the model loaded could not "
                                                  f"be applied ({error}); running with the start values")])
        self._coverage = self._coverage_monitor(build)
        self._segmenter = build.segmenter
        self._state = "running"
        self.get_logger().info(f"segmenter ready ({', '.join(f'{k}: {v}' for k, v in build.info.items())})")

        step = self._guard.callback("inference", self._step)
        while not self._mailbox.closed:
            step(build.segmenter)

    def _step(self, segmenter) -> None:
        """One turn of the inference thread: parameter changes made meanwhile, then the newest frame."""
        frame = self._mailbox.take(timeout=0.25)
        self._apply_live_changes(segmenter)
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
        """Apply the live parameters in force now (some may have changed while the model was built; the
        changes queued meanwhile are applied again after this, in order, which ends at the same values)."""
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
        if result.navigator_error is not None:   # the frame kept its mask; the next due frame embeds again
            self.get_logger().error(f"navigator failed ({segmenter.navigator_errors} so far): "
                                    f"{result.navigator_error}", throttle_duration_sec=LOG_THROTTLE_S)
        self._check_backend(segmenter.backend)
        num_classes = len(result.classes)
        try:
            self._publish_class_map_if_new(result.classes, frame.header)
            self._mask_pub.publish(mask_to_image(result.class_ids, num_classes, frame.header))
            self._support_pub.publish(self._support_message(result, frame.header))
            if result.fusion is not None:
                self._publish_fusion(result.fusion, frame.header)
            if result.embedding is not None and self._coverage is not None and segmenter.library is not None:
                self._observe_coverage(segmenter, result, frame)
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
        self.get_logger().debug(
            f"frame {frame.header.stamp.sec}.{frame.header.stamp.nanosec:09d}: model {result.model_ms:.1f} ms, "
            f"queue {(taken - frame.queued) * 1e3:.1f} ms, publish {(published - processed) * 1e3:.1f} ms, "
            f"latency {latency_ms:.1f} ms; support {result.support:.4f}, ema distance {result.ema_distance:.4f} "
            f"(threshold {result.threshold:.4f})", throttle_duration_sec=FRAME_LOG_THROTTLE_S)

    def _publish_class_map_if_new(self, classes: tuple[str, ...], header) -> None:
        """Say what mask values mean whenever a frame is the first one segmented with a vocabulary; the
        message carries that frame's header, so a subscriber knows from which mask on it applies."""
        published, version = self._class_map
        if tuple(classes) == published:
            return
        version += 1
        self._class_map_pub.publish(ClassMap(header=header, class_names=list(classes), vocabulary_version=version,
                                             mask_encoding=mask_encoding(len(classes))))
        self._class_map = (tuple(classes), version)
        self.get_logger().info(f"class map v{version}: {len(classes)} classes ({mask_encoding(len(classes))})")

    def _check_backend(self, backend) -> None:
        """An engine backend says how frames run (engine, or PyTorch while it builds/rebuilds and why):
        reported to the log and /diagnostics when it changes."""
        status = backend.status() if backend is not None else None
        if status is not None and status != self._backend_status:
            self._backend_status = status
            self._report("backend", [status])
            if status[0] == "ok":
                self.get_logger().info(status[1])

    # ------------------------------------------------------------------ library coverage
    def _coverage_monitor(self, build) -> CoverageMonitor | None:
        try:
            monitor = CoverageMonitor(parameters.coverage_settings(self._values()),
                                      classes=build.predictor.class_names, navigator_id=getattr(build.navigator, "id", None))
        except (ValueError, OSError) as error:
            self._report("coverage", [("error", f"coverage monitor off: {error}")])
            return None
        self._report("coverage", [("ok", "covered")])
        return monitor

    def _observe_coverage(self, segmenter, result, frame) -> None:
        """Judge the embedded frame against the library, publish `coverage` with that frame's header (the
        navigator runs beside segmentation, so it can be an earlier frame than this one), WARN while a gap lasts."""
        header = result.embedded_stamp if hasattr(result.embedded_stamp, "stamp") else frame.header
        image = result.embedded_image if result.embedded_image is not None else frame.rgb
        stamp = header.stamp
        try:
            report = self._coverage.observe(result.embedding, segmenter.library, segmenter.settings, image,
                                            f"{stamp.sec:010d}_{stamp.nanosec:09d}",
                                            {"sec": stamp.sec, "nanosec": stamp.nanosec, "frame_id": header.frame_id},
                                            now=result.embedded_time_s, found=result.retrieval)
        except OSError as error:   # a full or read-only disk stops capturing, never the node
            self._report("coverage", [("error", f"capturing frames failed: {error}")])
            self._coverage.update_settings(capture_dir="")
            return
        self._coverage_pub.publish(CoverageStatus(
            header=header, status=report.status, nearest_distance=float(report.nearest_distance),
            relative_distance=float(report.relative_distance), scale_free_support=float(report.scale_free_support),
            uncovered_fraction=float(report.uncovered_fraction), frames_captured=report.frames_captured,
            capture_dir=report.capture_dir))
        self._stats.set_engine(coverage=report.status_name, coverage_uncovered_fraction=f"{report.uncovered_fraction:.2f}",
                               coverage_frames_captured=report.frames_captured)
        state = (report.status == GAP, report.capture_full)
        if state != self._coverage_state:   # a WARN while a gap lasts (and while the capture folder is full)
            self._coverage_state = state
            self._report("coverage", [("warn" if problem else "ok", text)
                                      for problem, text in self._coverage.describe(report)])

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
        self._report_unusable_adapters()
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

    def _report_unusable_adapters(self) -> None:
        """Entries found unusable when first read (by a fusion or a read-ahead): each logged once, all
        in diagnostics; they are left out of retrieval until the library is reloaded."""
        library = self._segmenter.library
        failed = library.failed if library is not None else []
        for name, reason in failed:
            if name not in self._unusable_logged:
                self._unusable_logged.add(name)
                self.get_logger().warning(f"adapter {name} skipped until the library is reloaded: {reason}")
        self._health.set("adapters", [("warn", f"adapter {name} skipped: {reason}") for name, reason in failed])

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate our parameters. rclpy stores the values (and owns the parameters it declares itself,
        such as use_sim_time). Answers at once: waiting for the frame in flight made a burst of sets
        take minutes; the inference thread applies stored changes before its next frame."""
        changes = {p.name: p.value for p in params if p.name in parameters.SPEC_BY_NAME}
        reason = parameters.validate_in_context(self._values(), changes) if changes else None
        if reason:
            self.get_logger().debug(f"parameters refused: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, params) -> None:
        """rclpy stored these values: queue ours for the inference thread."""
        changes = {p.name: p.value for p in params if p.name in parameters.SPEC_BY_NAME}
        if changes:
            self._live_changes.put(changes)
            self.get_logger().debug("parameters set: " + ", ".join(f"{n}={v!r}" for n, v in changes.items()))

    def _apply_live_changes(self, segmenter) -> None:
        """Push the queued parameter changes into the segmenter, in the order they were stored."""
        while True:
            try:
                changes = self._live_changes.get_nowait()
            except queue.Empty:
                return
            reason = self._apply_live(segmenter, changes)
            if reason:
                self._report("live parameters", [("error", f"applying {', '.join(sorted(changes))} failed, "
                                                           f"the segmenter keeps the previous values: {reason}")])

    def _apply_live(self, segmenter, changes) -> str | None:
        """Push changes into the segmenter; undo the settings if a later step fails."""
        settings = parameters.settings_changes(changes)
        coverage = parameters.coverage_changes(changes)
        previous = segmenter.settings
        try:
            if settings:
                segmenter.update_settings(**settings)
            if coverage and self._coverage is not None:
                self._coverage.update_settings(**coverage)
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
        """Reads the library on a job thread of its own; answers with its result when it is quick,
        otherwise at once with "in progress" (the result then goes to the log and /diagnostics)."""
        root = self._value("library_path")
        if not root:
            response.success, response.message = False, "library_path is '' (set it and restart)"
            return response
        segmenter = self._segmenter
        if segmenter is None:
            response.success, response.message = False, f"segmenter not running ({self._state})"
            return response
        future = self._reload.start(root, self._reload_library, segmenter, root)
        if future is None:
            response.success = False
            response.message = (f"reload of {self._reload.what} in progress (started "
                                 f"{time.monotonic() - self._reload.started_at:.1f} s ago); "
                                 "its result goes to the log and /diagnostics")
            return response
        try:
            response.success, response.message = future.result(timeout=RELOAD_REPLY_WAIT_S)
        except TimeoutError:
            response.success = False
            response.message = (f"reload of {root} in progress (still reading after {RELOAD_REPLY_WAIT_S:g} s); "
                                "its result goes to the log and /diagnostics")
        return response

    def _reload_library(self, segmenter, root) -> tuple[bool, str]:
        """The reload job: (success, message), also logged and shown in /diagnostics."""
        try:  # the segmenter reads the files off its frame lock and swaps the snapshot between frames
            count, skipped = segmenter.reload_library(root)
        except Exception as error:  # the old library stays active; say why
            message = f"reload of {root} failed, previous library kept: {error}"
            self._health.set("reload", [("warn", message)])   # the node runs on with the previous library
            self.get_logger().error(message)
            return False, message
        message = f"{count} adapters loaded from {root}, {len(skipped)} skipped"
        self._health.set("reload", [])
        self._health.set("adapters", [])   # a new snapshot: no entry has failed at use yet
        self._unusable_logged.clear()
        self._report("library", [("ok", message)] +
                     [("warn", f"adapter {name} skipped: {reason}") for name, reason in skipped])
        self.get_logger().info(message)
        return True, message

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
            try:
                executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                raise
            except Exception as error:  # a callback created without the guard: recorded, never an exit
                node._guard.record("executor", error)
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
