"""Fault suite (issue 15): bad messages, requests, files and floods against the node in its own process.

Every case asserts that the node is alive, that good frames sent after the fault still get their
masks, that the error is named (a counter or an entry in /diagnostics, a reason in the answer or the
log) and that the active fusion is intact (same swap count and adapters, no failed fusion).

- compressed-image bombs: a 57-byte PNG whose header says 40000x40000 (cv2.error escaped the
  callback: exit 1) and a 268-megapixel PNG of 260 kB (decoded, +268 MB peak RSS, then dropped) are
  refused from their headers, before any pixel is decoded;
- a SetParameters / SetParametersAtomically request with an invalid type code (ValueError inside
  rclpy's own parameter service: exit 1) is answered as failed, with the reason;
- `use_sim_time` set live (the parameter rclpy owns) is accepted and frames keep flowing;
- floods (slow): a reload hung on a FIFO, 300 ~/adapt_now, 50 ~/reload_library and 300 parameter
  sets all answered within seconds (adapt_now answered 11 of 300 in 120 s, parameter sets 157 of 300);
- a corrupt checkpoint (finding 7): test_ros_node_missing_files.py, next to the missing one.
"""
from __future__ import annotations

import errno
import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, NodeProcess, Probe, build_test_library, png_bytes, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # each test starts the node in its own process

NODE = "/t/semla_segmenter"


# ---------------------------------------------------------------------------------------------- helpers
def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def fusion_state(diag: dict) -> tuple[str, str, str]:
    """(swaps, failed_fusions, active_adapters) as the node reports them."""
    return diag.get("swaps"), diag.get("failed_fusions"), diag.get("active_adapters")


def call(probe: Probe, client, request, timeout: float, what: str):
    future = client.call_async(request)
    probe.spin_until(future.done, timeout, what)
    return future.result()


def wait_all(probe: Probe, futures: list, start: float, timeout: float, what: str) -> float:
    """Seconds from `start` until every future is done; fails naming how many were answered."""
    deadline = start + timeout
    while not all(f.done() for f in futures):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {sum(f.done() for f in futures)} of {len(futures)} answered "
                                 f"in {timeout:.0f} s")
        probe.executor.spin_once(timeout_sec=0.05)
    return time.monotonic() - start


def double(name: str, value: float):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))


def bad_type(name: str, code: int = 200):
    from rcl_interfaces.msg import Parameter, ParameterValue

    return Parameter(name=name, value=ParameterValue(type=code))


# ------------------------------------------------------------------- one node for the compressed cases
class CompressedNode:
    """The node on image/compressed with a 4-adapter library, a probe that sends JPEGs and records masks."""

    def __init__(self, tmp_path):
        import cv2
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from semla_ros.msg import AdapterFusion
        from semla_ros.ros.node import FUSION_QOS
        from semla_ros.ros.synthetic_camera import render

        library = tmp_path / "library"
        build_test_library(library)
        self.node = NodeProcess(tmp_path, tiny_node_params(
            navigator="tower", library_path=str(library), input_transport="compressed", input_qos="default",
            input_qos_depth=10, warmup_frames=1, cooldown_s=0.0))
        self.probe = Probe()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.probe.node.create_publisher(CompressedImage, "/t/image/compressed", reliable)
        self.masks = self.probe.collect(Image, "/t/mask", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.fusions = self.probe.collect(AdapterFusion, "/t/fusion", FUSION_QOS)
        self.probe.watch_diagnostics()
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(render("day", *FRAME_SIZE)[..., ::-1]))
        assert ok
        self.jpeg = jpeg.tobytes()
        self.sent = 0

    def start(self):
        self.probe.wait_running(self.node)
        self.probe.spin_until(lambda: self.publisher.get_subscription_count() > 0, 10, "the node's subscription")
        deadline = time.monotonic() + 60
        while not self.fusions:   # a finished adaptation is swapped in before the next frame
            assert time.monotonic() < deadline, "no startup fusion after 60 s of frames"
            self.good_frame()
        self.good_frame()   # the startup fusion is active and reported in /diagnostics

    def send(self, data: bytes, frame_id: str, fmt: str = "jpeg"):
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(format=fmt, data=data)
        msg.header.frame_id = frame_id
        msg.header.stamp = self.probe.node.get_clock().now().to_msg()
        self.publisher.publish(msg)
        self.probe.spin_for(0.05)

    def good_frame(self, timeout: float = 60.0, counted: bool = True) -> None:
        """Send a good JPEG and wait for its mask (same frame_id, the input's size) and, if `counted`,
        for /diagnostics to have counted it."""
        self.sent += 1
        frame_id = f"good-{self.sent}"
        self.send(self.jpeg, frame_id)
        self.probe.spin_until(lambda: any(m.header.frame_id == frame_id for m in self.masks), timeout,
                              f"the mask of {frame_id}")
        mask = next(m for m in self.masks if m.header.frame_id == frame_id)
        assert (mask.height, mask.width) == FRAME_SIZE
        if counted:
            self.probe.spin_until(lambda: self.probe.diag().get("frames_processed") == str(len(self.masks)), 10,
                                  "/diagnostics to count the frame")

    def alive(self) -> bool:
        return self.node.proc.poll() is None

    def close(self):
        code, _ = self.node.stop()
        self.probe.close()
        return code


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ROS_DOMAIN_ID", str((os.getpid() * 13 + 5) % 100 + 1))   # one domain for this module
        env.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        harness = CompressedNode(tmp_path_factory.mktemp("faults"))
        try:
            harness.start()
            yield harness
        finally:
            code = harness.close()
        assert code == 0, harness.node.log()


def test_compressed_bombs_refused_from_their_header(compressed):
    """Finding 1: dropped and counted as too_large before decoding; peak RSS does not move."""
    before = fusion_state(compressed.probe.diag())
    peak_before = peak_rss_mb(compressed.node.proc.pid)
    header_only = png_bytes(40000, 40000, with_pixels=False)
    bomb = png_bytes(16384, 16384, with_pixels=True)     # 268 megapixels of zeros in ~260 kB
    assert len(header_only) < 65 and len(bomb) < 300_000
    compressed.send(header_only, "bomb-40000x40000", "png")
    compressed.send(bomb, "bomb-268-megapixels", "png")
    compressed.good_frame()
    compressed.probe.spin_until(lambda: compressed.probe.diag().get("frames_bad_too_large") == "2", 10,
                                "both bombs counted as too_large")
    assert compressed.alive()
    growth = peak_rss_mb(compressed.node.proc.pid) - peak_before
    assert growth < 100, f"peak RSS grew by {growth:.0f} MB: the bomb was decoded"
    assert not any(m.header.frame_id.startswith("bomb") for m in compressed.masks)
    dropped = [line for line in compressed.node.log().splitlines() if "dropped bad frame" in line]
    assert dropped and "too_large" in dropped[0] and "1600000000 pixels" in dropped[0], dropped  # throttled
    assert fusion_state(compressed.probe.diag()) == before


def test_invalid_parameter_type_code_answered(compressed):
    """Finding 2: the request is answered as failed with its reason; nothing is set; the node carries on."""
    from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically

    from semla_ros.core.settings import DEFAULTS

    probe = compressed.probe
    before = fusion_state(probe.diag())
    set_client = probe.node.create_client(SetParameters, f"{NODE}/set_parameters")
    atomic_client = probe.node.create_client(SetParametersAtomically, f"{NODE}/set_parameters_atomically")
    get_client = probe.node.create_client(GetParameters, f"{NODE}/get_parameters")
    for client in (set_client, atomic_client, get_client):
        probe.spin_until(client.service_is_ready, 10, f"service {client.srv_name}")

    reply = call(probe, set_client, SetParameters.Request(parameters=[bad_type("switch_threshold")]), 10,
                 "the answer to a parameter with type code 200")
    assert len(reply.results) == 1 and not reply.results[0].successful
    assert "200 is not a valid Parameter.Type" in reply.results[0].reason
    # A good parameter before the bad one is set (rclpy answers it); the bad one and any after are not.
    reply = call(probe, set_client, SetParameters.Request(parameters=[
        double("overlay_alpha", 0.25), bad_type("top_k", 77), double("switch_threshold", 9.0)]), 10,
        "the answer to a mixed request")
    assert [r.successful for r in reply.results] == [True, False, False], reply.results
    assert "77 is not a valid Parameter.Type" in reply.results[1].reason
    reply = call(probe, atomic_client, SetParametersAtomically.Request(parameters=[
        double("switch_threshold", 9.0), bad_type("switch_threshold", 255)]), 10, "the atomic answer")
    assert not reply.result.successful and "255 is not a valid Parameter.Type" in reply.result.reason

    assert compressed.alive()
    compressed.good_frame()
    values = call(probe, get_client, GetParameters.Request(names=["switch_threshold", "overlay_alpha"]), 10,
                  "the parameter values").values
    assert values[0].double_value == DEFAULTS.switch_threshold   # untouched
    assert values[1].double_value == 0.25
    diag = probe.diag()
    assert diag["callback_errors_set_parameters"] == "2" and diag["callback_errors_set_parameters_atomically"] == "1"
    named = [v for k, v in diag.items() if k.startswith("warn_callback_set_parameters_")]
    assert len(named) == 2, diag   # the latest error of each service, named
    assert any("ValueError: 77 is not a valid Parameter.Type" in v for v in named), named
    assert fusion_state(diag) == before


def test_use_sim_time_set_live(compressed):
    """Finding 3 (one case; the deployment tests cover the rest): the parameter rclpy owns."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    probe = compressed.probe
    before = fusion_state(probe.diag())
    client = probe.node.create_client(SetParameters, f"{NODE}/set_parameters")
    probe.spin_until(client.service_is_ready, 10, "set_parameters")
    for value in (True, False):
        flag = Parameter(name="use_sim_time", value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                                    bool_value=value))
        reply = call(probe, client, SetParameters.Request(parameters=[flag]), 10, f"use_sim_time:={value}")
        assert reply.results[0].successful, reply.results[0].reason
        # Masks do not depend on the node's clock; /diagnostics does (no /clock here: it pauses).
        compressed.good_frame(counted=not value)
    assert compressed.alive()
    assert fusion_state(probe.diag()) == before


# ----------------------------------------------------------------------------------------------- floods
def test_services_answer_promptly_under_floods(tmp_path, probe, run_node, run_camera):
    """Finding 8 (node side): a reload stuck on a FIFO does not hold any service; floods are answered."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_parameters
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from semla_ros.msg import AdapterFusion
    from semla_ros.ros.node import FUSION_QOS

    library = tmp_path / "library"
    build_test_library(library)
    node = run_node(tiny_node_params(navigator="tower", library_path=str(library), warmup_frames=1,
                                     top_k=2))
    masks = probe.collect(Image, "/t/mask", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    fusions = probe.collect(AdapterFusion, "/t/fusion", FUSION_QOS)
    probe.watch_diagnostics()
    probe.wait_running(node)
    run_camera("day:0", 10)
    probe.spin_until(lambda: fusions and probe.diag().get("swaps") == "1", 60, "the startup fusion in use")
    adapters = sorted(fusions[0].adapter_names)
    assert adapters and all(name.startswith("day-") for name in adapters)

    # An entry whose adapter_config.json is a FIFO: reading it blocks until someone writes.
    stuck = library / "stuck-entry"
    shutil.copytree(library / "day-0", stuck)
    (stuck / "adapter_config.json").unlink()
    fifo = stuck / "adapter_config.json"
    os.mkfifo(fifo)

    # A client's own queues (depth 10 by default) drop the answers of a burst beyond it; a flooding
    # client needs a deep one, as rclpy's parameter clients have (qos_profile_parameters, depth 1000).
    adapt = probe.node.create_client(Trigger, f"{NODE}/adapt_now", qos_profile=qos_profile_parameters)
    reload = probe.node.create_client(Trigger, f"{NODE}/reload_library", qos_profile=qos_profile_parameters)
    params = probe.node.create_client(SetParameters, f"{NODE}/set_parameters", qos_profile=qos_profile_parameters)
    for client in (adapt, reload, params):
        probe.spin_until(client.service_is_ready, 10, f"service {client.srv_name}")
    start = time.monotonic()
    first = call(probe, reload, Trigger.Request(), 15, "the answer to the first reload")
    first_s = time.monotonic() - start
    assert first.success or "in progress" in first.message, first.message

    flood = time.monotonic()
    adapts = [adapt.call_async(Trigger.Request()) for _ in range(300)]
    reloads = [reload.call_async(Trigger.Request()) for _ in range(50)]
    sets = [params.call_async(SetParameters.Request(parameters=[double("switch_threshold", 0.5 + 0.01 * (i % 2))]))
            for i in range(300)]
    seen = len(masks)
    adapts_s = wait_all(probe, adapts, flood, 30, "~/adapt_now flood")
    reloads_s = wait_all(probe, reloads, flood, 30, "~/reload_library flood")
    sets_s = wait_all(probe, sets, flood, 30, "parameter-set flood")
    print(f"first reload answered in {first_s:.2f} s ({first.message!r}); all answered, from the start of "
          f"the floods, after {adapts_s:.1f} s (300 adapt_now), {reloads_s:.1f} s (50 reload_library), "
          f"{sets_s:.1f} s (300 parameter sets)")
    assert all(f.result().success for f in adapts)
    assert all(f.result().success or "in progress" in f.result().message for f in reloads)
    assert all(f.result().results[0].successful for f in sets)
    probe.spin_until(lambda: len(masks) >= seen + 3, 60, "masks during and after the floods")
    assert node.proc.poll() is None

    # Unstick the reader (if the library blocked on the FIFO): that reload ends with the entry skipped.
    try:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:   # ENXIO: nobody is reading it (the library does not block on FIFOs)
        assert error.errno == errno.ENXIO, error
    else:
        os.write(writer, b"{")
        os.close(writer)

    def skipped():
        return [v for k, v in probe.diag().items() if k.startswith("warn_library_") and "stuck-entry" in v]

    probe.spin_until(skipped, 60, "the stuck entry skipped by name in /diagnostics")
    shutil.rmtree(stuck)
    swaps = len(fusions)
    # A reload of the flood may still be reading (its answer said "in progress"), and it may have
    # listed the folder before it was removed: ask until a reload that started after the removal answers.
    deadline = time.monotonic() + 60
    while True:
        reply = call(probe, reload, Trigger.Request(), 15, "the answer to a reload without the FIFO")
        if reply.success:
            break
        assert "in progress" in reply.message, reply.message
        assert time.monotonic() < deadline, f"no reload finished in 60 s: {reply.message}"
        probe.spin_for(0.5)
    assert "0 skipped" in reply.message, reply.message
    probe.spin_until(lambda: not skipped(), 60, "a reload without the stuck entry")
    probe.spin_until(lambda: len(fusions) > swaps and fusions[-1].reason == AdapterFusion.REASON_RELOAD, 60,
                     "its reload fusion")
    assert probe.diag()["failed_fusions"] == "0"
    assert all(sorted(f.adapter_names) == adapters for f in fusions), [f.adapter_names for f in fusions]
    assert node.proc.poll() is None
    code, _ = node.stop()
    assert code == 0, node.log()
