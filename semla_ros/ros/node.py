"""The `semla_segmenter` ROS 2 node: topics, services, parameters and threads around SemlaSegmenter.

Why this shape: nothing slow runs in a ROS callback. The image callback converts the frame and drops
it into a one-slot mailbox; the inference workers (one per camera by default, `inference_workers`, see
ros/turns.py) take the newest frames in turns, segment them with the one segmenter and publish
everything for each frame with its input's header, in the frames' order; the segmenter adapts on its
own worker and swaps between forwards. Configuration problems (missing checkpoint, absent library, bad parameter)
are logged once and shown in /diagnostics while the node stays up, so a launch file never
crash-loops.

One managed (lifecycle) node for both executables: `configure` builds the engine, `activate` subscribes
and enables the publishers, `deactivate` unsubscribes and keeps the model, `cleanup` frees it.
`semla_segmenter` is this node driven to active at start (autostart, as nav2's lifecycle manager does);
`semla_segmenter_managed` waits for a lifecycle manager.
"""
from __future__ import annotations

import collections
import functools
import gc
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_parameters,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from semla_ros.core.coverage import GAP, CoverageMonitor
from semla_ros.msg import AdapterFusion, ClassMap, CoverageStatus, SupportScore
from semla_ros.ros import parameters
from semla_ros.ros.background import BackgroundJob
from semla_ros.ros.cameras import MergedFrameTime, RoundFrame, label, take_round, topic
from semla_ros.ros.dds_profile import with_large_image_transport
from semla_ros.ros.diagnostics import LEVEL_BYTES, Health, NodeStats, diagnostic_array
from semla_ros.ros.guard import CallbackGuard
from semla_ros.ros.image_conversion import (
    BadFrame,
    compressed_to_rgb,
    image_to_rgb,
    mask_encoding,
    mask_to_image,
    rgb_problem,
    rgb_to_image,
)
from semla_ros.ros.log_bridge import route_python_logging
from semla_ros.ros.mailbox import CameraMailboxes
from semla_ros.ros.overlay import blend, palette
from semla_ros.ros.process import StopSignals, leave
from semla_ros.ros.processes import HOLD_LOAD_ENV, HOLD_LOAD_LOG
from semla_ros.ros.turns import TurnOrder, share_cores, worker_count

NODE_NAME = "semla_segmenter"
# The interpreter lock's switch interval in the node's process (Python's default: 5 ms). An inference thread
# hands the lock back at every PyTorch operator and asks for it again when the operator ends; while the
# executor's threads run Python (wait sets, frame conversions), it waited up to the whole interval each time.
# With three 30 Hz cameras on the demo model one node made 5.6 masks/s at 5 ms and 26 at 0.5 ms (docs/cameras.md).
SWITCH_INTERVAL_S = 0.0005
LOG_THROTTLE_S = 5.0
RELOAD_REPLY_WAIT_S = 2.0   # a reload still running after this is answered "in progress"
# Our services queue a flood of requests (depth 1000, as rclpy's parameter services) instead of dropping them.
SERVICE_QOS = qos_profile_parameters
# `qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability>` parameters (image_pipeline's set).
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@dataclass
class Camera:
    """One camera the node serves (parameter image_topics): its namespace ('' = the node's), its output
    publishers, and the vocabulary its class_map announced last."""

    name: str
    mask: Any = None
    support: Any = None
    overlay: Any = None
    coverage: Any = None
    class_map: Any = None
    announced: tuple[tuple[str, ...], int] = ((), 0)   # (vocabulary published last, its version)

    @property
    def label(self) -> str:
        return label(self.name)


@dataclass
class Frame:
    """A converted frame waiting for the inference thread."""

    rgb: np.ndarray
    header: Any
    received: float       # time.monotonic() at callback entry
    queued: float         # time.monotonic() when put into the mailbox
    conversion_ms: float
    clock_s: float        # the node clock (ROS time: sim time with use_sim_time) at callback entry
    camera: Camera        # the camera it came from


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


def transition(method):
    """A lifecycle transition callback, logged; rclpy turns an exception in one into ERROR without a word,
    so it is recorded first (log and /diagnostics, as any callback's)."""
    @functools.wraps(method)
    def run(self, state: LifecycleState) -> TransitionCallbackReturn:
        name = method.__name__.removeprefix("on_")
        self.get_logger().info(f"lifecycle: {name} (from {state.label})")
        try:
            result = method(self, state)
        except Exception as error:
            self._guard.record(name, error)
            return TransitionCallbackReturn.ERROR
        if result != SUCCESS:
            self.get_logger().error(f"lifecycle: {name} failed ({self._state})")
        return result
    return run


class SemlaSegmenterNode(LifecycleNodeMixin, Node):
    """The managed node; `autostart` drives it to active once the executor spins."""

    def __init__(self, autostart: bool = False, **kwargs):
        Node.__init__(self, NODE_NAME, **kwargs)
        # The lifecycle services in a group of their own: a configure loading the model for seconds blocks
        # neither the parameter services nor the diagnostics timer.
        self._lifecycle_group = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, callback_group=self._lifecycle_group)
        route_python_logging(self.get_logger())   # the engine's `logging` records show up in the node's log
        values, problems = parameters.declare(self)   # rclpy stores the values; the node keeps no copy
        self._problems = problems
        self._stats = NodeStats()
        self._health = Health()
        self._guard = CallbackGuard(self._stats, self._health, self.get_logger())
        self._cameras: list[Camera] = []    # from image_topics at configure
        self._mailbox = CameraMailboxes([])
        self._frame_time = MergedFrameTime()
        self._header_cameras: collections.OrderedDict = collections.OrderedDict()   # id(header) -> (header, camera)
        self._live_changes: queue.SimpleQueue = queue.SimpleQueue()   # stored parameter changes, in order
        self._reload = BackgroundJob("semla-reload")
        self._segmenter = None
        self._engine_builds = None   # HeldExecutor: the ONNX Runtime sessions open after the first mask
        self._threads: list[threading.Thread] = []   # the inference workers (inference_workers)
        self._subs: list = []
        self._outputs: list = []   # our lifecycle publishers (not `_publishers`: rclpy's own list)
        self._backend_status = None           # the engine backend's last (level, message), reported on change
        self._coverage: CoverageMonitor | None = None
        self._coverage_state = None
        self._unstamped_said = False
        self._palettes: dict[int, np.ndarray] = {}
        self._unusable_logged: set[str] = set()
        self._state = "unconfigured"
        self._closing = threading.Event()   # set by close(): a configure in progress gives up
        self._health.set("parameters", [("error", f"invalid parameter {p}") for p in problems])
        for problem in problems:
            self.get_logger().error(f"invalid parameter {problem}")

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
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
        self._guard.services_of(self)   # after the last service: ours, rclpy's parameter and lifecycle services
        self._autostart = (self.create_timer(0.0, self._start_active, callback_group=self._lifecycle_group)
                           if autostart else None)

    def _start_active(self) -> None:
        """Autostart: configure, then activate, from the executor (serialised with the lifecycle services)."""
        self.destroy_timer(self._autostart)
        if self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle transitions
    @transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Publishers, then the engine; FAILURE (reason in the log and /diagnostics) when it cannot run."""
        if self._problems:
            self._state = "not running: invalid parameters"
            return FAILURE
        self._state = "loading model"
        self._cameras = [Camera(name) for name in self._value("image_topics")]
        try:
            self._create_publishers()
        except Exception as error:  # a bad qos_overrides value (type or policy name) fails the transition
            self._report("qos_overrides", [("error", f"publishers not created: {type(error).__name__}: {error}")])
            self._state = "not running: invalid qos_overrides"
            self._destroy_publishers()
            return FAILURE
        segmenter = self._build_until_closed()
        if segmenter is None:
            self._destroy_publishers()
            return FAILURE
        self._mailbox = CameraMailboxes([camera.name for camera in self._cameras])
        self._frame_time = MergedFrameTime()
        self._segmenter = segmenter
        turns = TurnOrder()
        workers = worker_count(self._value("inference_workers"), len(self._cameras))
        self._stats.set_engine(inference_workers=workers)
        if workers > 1:
            threads = share_cores(workers)
            self.get_logger().info(f"{workers} inference workers share the model, {threads} PyTorch thread(s) each")
        self._threads = [threading.Thread(target=self._run, args=(segmenter, turns), daemon=True,
                                          name="semla-inference" + (f"-{i}" if i else "")) for i in range(workers)]
        for thread in self._threads:
            thread.start()
        self._state = "inactive"
        return SUCCESS

    @transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, then subscribe to the cameras."""
        result = super().on_activate(state)
        try:
            for camera in self._cameras:
                self._subs.append(self._subscribe(camera))
        except Exception as error:  # a bad qos_overrides value fails the transition, never the node
            self._report("qos_overrides", [("error", f"input not subscribed: {type(error).__name__}: {error}")])
            self._unsubscribe()
            super().on_deactivate(state)
            return FAILURE
        self._state = "running"
        return result

    @transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop consuming frames; the model, the library and the inference thread stay."""
        self._unsubscribe()
        self._state = "inactive"
        return super().on_deactivate(state)

    @transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model: the inference thread ends, the segmenter closes, the publishers go."""
        self._release()
        self._state = "unconfigured"
        return SUCCESS

    @transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._release()
        self._state = "finalized"
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An exception in a transition: drop everything and go back to unconfigured."""
        self._unsubscribe()
        self._release()
        self._state = "unconfigured after an error"
        return SUCCESS

    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def _create_publishers(self) -> None:
        def publisher(msg_type, topic, qos=None):
            """qos None: the output_qos parameters, open to qos_overrides (a profile of its own each: rclpy
            writes the overrides into the profile it is given)."""
            overrides = QOS_OVERRIDES if qos is None else None
            if qos is None:
                qos = qos_profile(self._value("output_qos"), self._value("output_qos_depth"))
            created = self.create_lifecycle_publisher(msg_type, topic, qos, qos_overriding_options=overrides)
            self._outputs.append(created)
            return created

        for camera in self._cameras:   # per camera, under its namespace
            camera.mask = publisher(Image, topic(camera.name, "mask"))
            camera.support = publisher(SupportScore, topic(camera.name, "support_score"))
            camera.overlay = publisher(Image, topic(camera.name, "overlay"))
            camera.coverage = publisher(CoverageStatus, topic(camera.name, "coverage"))
            camera.class_map = publisher(ClassMap, topic(camera.name, "class_map"), CLASS_MAP_QOS)
            camera.announced = ((), 0)
        self._fusion_pub = publisher(AdapterFusion, "fusion", FUSION_QOS)   # one for the node: one model

    def _destroy_publishers(self) -> None:
        publishers, self._outputs = self._outputs, []
        for publisher in publishers:
            self.destroy_lifecycle_publisher(publisher)

    def _subscribe(self, camera: Camera):
        """The camera's input, in a callback group of its own (one camera's callback never waits for another's)."""
        in_qos = qos_profile(self._value("input_qos"), self._value("input_qos_depth"))
        if self._value("input_transport") == "compressed":
            msg_type, name, convert = CompressedImage, "image/compressed", compressed_to_rgb
        else:
            msg_type, name, convert = Image, "image", image_to_rgb
        callback = functools.partial(self._accept, camera, convert)
        return self.create_subscription(msg_type, topic(camera.name, name), self._guard.callback("image", callback),
                                        in_qos, callback_group=MutuallyExclusiveCallbackGroup(),
                                        qos_overriding_options=QOS_OVERRIDES)

    def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            self.destroy_subscription(sub)
        self._mailbox.clear()   # a frame already queued is not processed after deactivate

    def _release(self) -> None:
        """Stop the inference threads (bounded: a frame inside a slow model is not waited for), close the
        segmenter, drop every reference to the model and give its memory back."""
        self._mailbox.close()
        threads, segmenter, engine_builds = self._threads, self._segmenter, self._engine_builds
        self._threads = []
        self._segmenter = self._coverage = self._engine_builds = None
        deadline = time.monotonic() + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if engine_builds is not None:   # engine builds still held (no frame came) never start
            engine_builds.shutdown(wait=False)
        if segmenter is not None and not any(thread.is_alive() for thread in threads):
            # The engines too (an ONNX Runtime / TensorRT session, the navigator's), on a thread of their own
            # waited for 1 s at most: an export in flight stops at its next safe point without holding shutdown.
            from semla_ros.engine import close_engine  # the engine was built: build.py is imported already

            closer = threading.Thread(target=close_engine, args=(segmenter,), name="semla-engine-close", daemon=True)
            closer.start()
            closer.join(1.0)
        self._destroy_publishers()
        had_model, segmenter = segmenter is not None, None
        gc.collect()
        # Only after a model: a close during the build may find torch half imported on the build thread.
        torch = sys.modules.get("torch") if had_model else None
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

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
    def _accept(self, camera: Camera, convert, msg) -> None:
        """A camera's frame: converted and put into the camera's mailbox slot (never blocks)."""
        received = time.monotonic()
        clock_s = self.get_clock().now().nanoseconds * 1e-9
        self._stats.frame_received(camera.label)
        if self._segmenter is None:
            self._stats.frame_not_ready()
            return
        try:
            rgb = convert(msg, self._value("max_input_pixels"))
        except BadFrame as bad:
            self._stats.bad_frame(bad.kind, camera.label)
            where = f" from camera {camera.name}" if camera.name else ""
            self.get_logger().warning(f"dropped bad frame{where} ({bad}); {self._stats.bad_total} so far",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        queued = time.monotonic()
        self._mailbox.put(camera.name, Frame(rgb, msg.header, received, queued, (queued - received) * 1e3, clock_s,
                                             camera))

    # ------------------------------------------------------------------ inference thread
    def _build_until_closed(self):
        """The build on a thread of its own, waited for until the node closes: the executor's shutdown
        waits for its running callbacks, and a model build can take a minute."""
        built: list = []
        worker = threading.Thread(target=lambda: built.append(self._build_segmenter()), name="semla-build",
                                  daemon=True)
        worker.start()
        while worker.is_alive() and not self._closing.is_set():
            worker.join(0.1)
        if self._closing.is_set():
            self._state = "closing"
            return None
        return built[0] if built else None

    def _build_segmenter(self):
        """Build the engine from the parameters in force (`build_engine` is imported here: the node module
        needs only the parameter table); report each source's notes. Returns the segmenter, or None with the
        reason reported."""
        from semla_ros.backends.held_executor import HeldExecutor
        from semla_ros.engine import build_engine

        hold = os.environ.get(HOLD_LOAD_ENV)
        if hold:   # tests only (processes.HOLD_LOAD_ENV): a deterministic "during the load"
            self.get_logger().info(f"{HOLD_LOAD_LOG}: {hold}")
            while not os.path.exists(hold) and not self._closing.is_set():
                time.sleep(0.05)
        engine_builds = HeldExecutor()   # released by the inference thread once the first mask is out
        try:
            build = build_engine(parameters.engine_spec(self._values()), onnxruntime_builds=engine_builds)
        except Exception as error:  # an unexpected failure must still leave the node up and reporting
            engine_builds.shutdown(wait=False)
            self._report("model", [("error", f"building the segmenter failed: {type(error).__name__}: {error}")])
            self._state = "not running: build failed"
            return None
        for source in ("model", "backend", "navigator", "library"):
            entries = [(level, message) for s, level, message in build.notes if s == source]
            self._report(source, entries)
        if build.segmenter is None:
            engine_builds.shutdown(wait=False)
            self._state = "not running: no model"
            return None
        self._engine_builds = engine_builds
        try:
            self._catch_up(build.segmenter)
        except (ValueError, RuntimeError) as error:   # keep running on the values the model was built with
            self._report("parameters", [("error", f"live parameters changed while the model loaded could not "
                                                  f"be applied ({error}); running with the start values")])
        self._coverage = self._coverage_monitor(build)
        self.get_logger().info(f"segmenter ready ({', '.join(f'{k}: {v}' for k, v in build.info.items())})")
        return build.segmenter

    def _run(self, segmenter, turns: TurnOrder) -> None:
        """An inference thread, from configure to cleanup (`inference_workers` of them take turns)."""
        step = self._guard.callback("inference", self._step)
        mailbox = self._mailbox   # this configuration's: a later configure makes a new one
        while not mailbox.closed:
            step(segmenter, mailbox, turns)

    def _step(self, segmenter, mailbox: CameraMailboxes, turns: TurnOrder) -> None:
        """One turn of an inference thread: parameter changes made meanwhile, then the newest frame of each
        camera that has one, decided together (`take_round`, `decide_batch`) while no other worker takes
        frames, segmented beside the other workers' forwards, published after every earlier turn
        (ros/turns.py; see docs/cameras.md)."""
        ticket, frames, results = None, [], None
        try:
            with turns.taking():
                # While another worker's forward holds the cores, wait for every camera's frame: one fuller
                # forward later instead of a forward of the first frame to arrive now (fair to every camera).
                ready = mailbox.take_ready(timeout=0.25, gather=lambda: segmenter.forwards_in_flight > 0)
                self._apply_live_changes(segmenter)
                if not ready:
                    return
                source = self._value("frame_time")
                frames, rejected = take_round(ready, lambda frame: frame_seconds(frame.header, frame.clock_s, source),
                                              self._frame_time, lambda frame: rgb_problem(frame.rgb))
                for _, frame, problem in rejected:   # that camera's frame only: the others are segmented
                    self._stats.bad_frame("not_rgb", frame.camera.label)
                    where = f" from camera {frame.camera.name}" if frame.camera.name else ""
                    self.get_logger().warning(f"dropped bad frame{where} ({problem}); {self._stats.bad_total} so "
                                              "far", throttle_duration_sec=LOG_THROTTLE_S)
                if not frames:
                    return
                ticket, taken = turns.ticket(), time.monotonic()
                batch = self._decide(frames, segmenter)
            if batch is not None:
                results = self._segment(batch, frames)
                mailbox.nudge()   # a worker gathering frames for its turn: the cores are free now
        finally:
            if ticket is not None:   # every ticket publishes (or passes), or the later turns would wait forever
                with turns.publishing(ticket):
                    if results is not None:
                        self._publish_turn(frames, results, segmenter, taken)
        self._open_engines()

    def _decide(self, frames: list[RoundFrame], segmenter):
        """A turn's decisions (`decide_batch`); None when they failed (the reason logged, its frames counted)."""
        for item in frames:
            frame = item.frame
            self._header_cameras[id(frame.header)] = (frame.header, frame.camera)   # whose frame an embedding is
        while len(self._header_cameras) > 64:
            self._header_cameras.popitem(last=False)
        if any(item.unstamped for item in frames) and not self._unstamped_said:   # said once: log + diagnostics WARN
            self._unstamped_said = True
            self._report("frame_time", [("warn", "frames arrive without a header stamp: shift timing uses the "
                                                 "node clock at arrival instead")])
        try:
            return segmenter.decide_batch([item.frame.rgb for item in frames],
                                          [item.frame.header for item in frames],
                                          [item.time_s for item in frames])
        except Exception as error:  # keep serving the next turn; the reason goes to the log
            self._inference_failed(frames, error)
            return None

    def _segment(self, batch, frames: list[RoundFrame]):
        """A decided turn's forward (beside other workers' forwards); None when it failed. `segment` lets the
        model go whether or not the forward ran."""
        try:
            return batch.segment()
        except Exception as error:
            self._inference_failed(frames, error)
            return None

    def _inference_failed(self, frames: list[RoundFrame], error: Exception) -> None:
        for item in frames:
            self._stats.bad_frame("inference_error", item.frame.camera.label)
        self.get_logger().error(f"inference failed: {type(error).__name__}: {error}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    def _open_engines(self) -> None:
        """After the first mask (or the first failed frame): start the ONNX Runtime builds held since configure
        (with a cached export: opening the sessions), so they never compete with the first frame for the CPU."""
        engine_builds = self._engine_builds
        if engine_builds is not None and not engine_builds.released:
            engine_builds.release()

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

    def _publish_turn(self, frames: list[RoundFrame], results, segmenter, taken: float) -> None:
        """Each frame of a segmented turn on its camera's topics, and the engine's counters."""
        processed = time.monotonic()
        self._stats.set_engine(forwards=segmenter.forwards, batched_frames=segmenter.batched_frames)
        for item, result in zip(frames, results, strict=True):
            if result.navigator_error is not None:   # the frame kept its mask; the next due frame embeds again
                self.get_logger().error(f"navigator failed ({segmenter.navigator_errors} so far): "
                                        f"{result.navigator_error}", throttle_duration_sec=LOG_THROTTLE_S)
            self._check_backend(segmenter.backend)
            self._publish(item.frame, result, segmenter, taken, processed)
        active = segmenter.active
        self._stats.set_engine(
            swaps=segmenter.swap_count, failed_fusions=segmenter.failed_fusions,
            active_adapters=self._describe_active(active), time_resets=segmenter.time_resets)

    def _publish(self, frame: Frame, result, segmenter, taken: float, processed: float) -> None:
        """One frame's outputs on its camera's topics, with its header."""
        camera = frame.camera
        num_classes = len(result.classes)
        try:
            self._publish_class_map_if_new(camera, result.classes, frame.header)
            camera.mask.publish(mask_to_image(result.class_ids, num_classes, frame.header))
            camera.support.publish(self._support_message(result, frame.header))
            if result.fusion is not None:
                self._publish_fusion(result.fusion, frame.header, segmenter.library)
            if result.embedding is not None and self._coverage is not None and segmenter.library is not None:
                self._observe_coverage(segmenter, result, frame)
            if camera.overlay.get_subscription_count() > 0:  # only computed for a viewer
                overlay = blend(frame.rgb, result.class_ids, self._palette(num_classes), self._value("overlay_alpha"))
                camera.overlay.publish(rgb_to_image(overlay, frame.header))
                self._stats.overlays_published += 1
        except Exception as error:
            self._stats.publish_errors += 1
            self.get_logger().error(f"publishing failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        published = time.monotonic()
        latency_ms = (published - frame.received) * 1e3
        self._stats.frame_processed(
            camera.label, conversion_ms=frame.conversion_ms, queue_ms=(taken - frame.queued) * 1e3,
            model_ms=result.model_ms, process_ms=(processed - taken) * 1e3,
            publish_ms=(published - processed) * 1e3, latency_ms=latency_ms,
            overhead_ms=latency_ms - result.model_ms)
        self._stats.set_engine(
            support=f"{result.support:.4f}", ema_distance=f"{result.ema_distance:.4f}",
            switch_threshold=f"{result.threshold:.4f}", consecutive_over_threshold=result.consecutive,
            top_adapter=result.supports.top_adapter)
        self.get_logger().debug(
            f"frame {frame.header.stamp.sec}.{frame.header.stamp.nanosec:09d}: model {result.model_ms:.1f} ms "
            f"({result.batch} frame(s) a forward), queue {(taken - frame.queued) * 1e3:.1f} ms, publish "
            f"{(published - processed) * 1e3:.1f} ms, latency {latency_ms:.1f} ms; support {result.support:.4f}, "
            f"ema distance {result.ema_distance:.4f} (threshold {result.threshold:.4f})",
            throttle_duration_sec=FRAME_LOG_THROTTLE_S)

    def _publish_class_map_if_new(self, camera: Camera, classes: tuple[str, ...], header) -> None:
        """Say what mask values mean whenever a frame is the camera's first one segmented with a vocabulary;
        the message carries that frame's header, so a subscriber knows from which mask on it applies."""
        published, version = camera.announced
        if tuple(classes) == published:
            return
        version += 1
        camera.class_map.publish(ClassMap(header=header, class_names=list(classes), vocabulary_version=version,
                                          mask_encoding=mask_encoding(len(classes))))
        camera.announced = (tuple(classes), version)
        where = f" of camera {camera.name}" if camera.name else ""
        self.get_logger().info(f"class map{where} v{version}: {len(classes)} classes ({mask_encoding(len(classes))})")

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
                                      classes=build.predictor.class_names,
                                      navigator_id=getattr(build.navigator, "id", None))
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
        camera = self._header_cameras.get(id(header), (None, frame.camera))[1]
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
        segmenter.embed_densely(report.uncovered_fraction > 0)   # a suspected gap needs every embedding
        camera.coverage.publish(CoverageStatus(
            header=header, status=report.status, nearest_distance=float(report.nearest_distance),
            relative_distance=float(report.relative_distance), scale_free_support=float(report.scale_free_support),
            uncovered_fraction=float(report.uncovered_fraction), frames_captured=report.frames_captured,
            capture_dir=report.capture_dir))
        self._stats.set_engine(coverage=report.status_name,
                               coverage_uncovered_fraction=f"{report.uncovered_fraction:.2f}",
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
        return ", ".join(f"{n}:{w:.3f}" for n, w in zip(active.adapters, active.weights, strict=True))

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

    def _publish_fusion(self, event, frame_header, library) -> None:
        self._report_unusable_adapters(library)
        if not event.ok:
            self.get_logger().error(f"adaptation ({event.reason}) failed, previous model stays active: "
                                    f"{event.error}")
            return
        header = event.stamp if event.stamp is not None and hasattr(event.stamp, "frame_id") else frame_header
        self._fusion_pub.publish(AdapterFusion(
            header=header, adapter_names=list(event.adapters), weights=[float(w) for w in event.weights],
            distances=[float(d) for d in event.distances], support_score=float(event.support),
            reason=event.reason, fusion_ms=float(event.duration_ms), swap_count=int(event.swap_count)))
        made = "recalled" if event.recalled else "fused"
        self.get_logger().info(f"swap {event.swap_count} ({event.reason}, {made} in {event.duration_ms:.0f} ms): "
                               + ", ".join(f"{n} {w:.2f}" for n, w in zip(event.adapters, event.weights, strict=True)))

    def _report_unusable_adapters(self, library) -> None:
        """Entries found unusable when first read (by a fusion or a read-ahead): each logged once, all
        in diagnostics; they are left out of retrieval until the library is reloaded."""
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
        rows = ([("state", self._state), ("lifecycle_state", self.lifecycle_state())]
                + self._stats.values(self._mailbox.replaced) + self._health.rows())
        if len(self._cameras) > 1:
            stale = self._mailbox.replaced_by_camera
            rows += self._stats.camera_values({camera.label: stale.get(camera.name, 0) for camera in self._cameras})
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                f"{self.get_fully_qualified_name()}: segmenter",
                                                LEVEL_BYTES[level], message, rows))

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Stop consuming frames and free the model; bounded so shutdown stays < 2 s."""
        self._closing.set()
        self._unsubscribe()
        self._release()


def main(argv: list[str] | None = None, exit_process: bool = True, managed: bool = False) -> int:
    """Spin until SIGINT/SIGTERM, then stop threads and leave within ~2 s.

    Our own signal handlers only set a flag (semla_ros.ros.process): rclpy's handler would raise
    KeyboardInterrupt at a random point of the teardown (seen inside destroy_node). `managed` leaves
    the node unconfigured for a lifecycle manager; otherwise it configures and activates itself.
    """
    stop = StopSignals()
    # The node's own full-size rgb8 overlay exceeds Fast DDS's default shared-memory segment.
    with_large_image_transport()
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    node = SemlaSegmenterNode(autostart=not managed)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while not stop.event.is_set() and rclpy.ok():
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
        stop.restore()
        sys.setswitchinterval(switch_interval)
    if exit_process:
        leave(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
