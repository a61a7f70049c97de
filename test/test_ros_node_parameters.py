"""Live parameters through the SetParameters service (what `ros2 param set` calls), node in its own process.

What is asserted:
- threshold_mode=absolute + switch_threshold=0.123 (one atomic request) shows up in the next
  support scores' switch_threshold; ema_alpha/top_k read back through GetParameters;
- classes set to ['road']: the next masks are all class 0, where the 4-class masks were not
  (text re-encoded live; the mono8 -> mono16 switch past 255 classes is covered by
  test_ros_image_conversion.py, since 256 classes cost ~30 s a frame on this CPU);
- the overlay is published (rgb8, input header/size) only once someone subscribes to it;
- invalid values are refused with a reason and change nothing: distance='manhattan' and duplicate
  classes (our validation), top_k=0 (descriptor range), model_config (read-only); afterwards the
  parameters read back unchanged and the published threshold / encoding stay as they were.
"""
from __future__ import annotations

import math

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, build_test_library, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # each test starts the node in its own process


def _parameter(name, value):
    from rclpy.parameter import Parameter

    return Parameter(name, value=value).to_parameter_msg()


def test_set_parameters_live_and_refused(tmp_path, probe, run_node, run_camera):

    from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
    from rclpy.parameter import parameter_value_to_python
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.msg import SupportScore

    library = tmp_path / "library"
    build_test_library(library)
    node = run_node(tiny_node_params(navigator="tower", library_path=str(library), trigger="distance"))
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    masks = probe.collect(Image, "/t/mask", reliable)
    scores = probe.collect(SupportScore, "/t/support_score", reliable)
    probe.watch_diagnostics()
    probe.wait_running(node)
    run_camera("day:0", 5)
    probe.spin_until(lambda: len(scores) >= 1, 60, "a first support score")

    # The overlay is computed only while someone subscribes to it.
    probe.spin_for(0.5)
    assert probe.diag()["overlays_published"] == "0"
    overlays = probe.collect(Image, "/t/overlay", reliable)
    probe.spin_until(lambda: len(overlays) >= 1, 60, "an overlay once subscribed")
    assert overlays[0].encoding == "rgb8" and (overlays[0].height, overlays[0].width) == FRAME_SIZE
    assert any(m.header == overlays[0].header for m in masks)
    probe.spin_until(lambda: int(probe.diag()["overlays_published"]) >= 1, 5, "diagnostics to count it")

    set_client = probe.node.create_client(SetParameters, "/t/semla_segmenter/set_parameters")
    atomic_client = probe.node.create_client(SetParametersAtomically,
                                             "/t/semla_segmenter/set_parameters_atomically")
    get_client = probe.node.create_client(GetParameters, "/t/semla_segmenter/get_parameters")
    for client in (set_client, atomic_client, get_client):
        probe.spin_until(client.service_is_ready, 10, f"service {client.srv_name}")

    def call(client, request, timeout=60):
        future = client.call_async(request)
        probe.spin_until(future.done, timeout, f"a reply from {client.srv_name}")
        return future.result()

    def get(*names):
        reply = call(get_client, GetParameters.Request(names=list(names)))
        return [parameter_value_to_python(v) for v in reply.values]

    relative_threshold = scores[-1].switch_threshold
    assert math.isfinite(relative_threshold) and not math.isclose(relative_threshold, 0.123)

    # --- live changes take effect on the next frames
    reply = call(atomic_client, SetParametersAtomically.Request(parameters=[
        _parameter("threshold_mode", "absolute"), _parameter("switch_threshold", 0.123)]))
    assert reply.result.successful, reply.result.reason
    seen = len(scores)
    probe.spin_until(lambda: len(scores) >= seen + 2, 60, "two support scores after the change")
    assert math.isclose(scores[-1].switch_threshold, 0.123, rel_tol=1e-6)

    reply = call(set_client, SetParameters.Request(parameters=[
        _parameter("ema_alpha", 0.25), _parameter("top_k", 3)]))
    assert all(r.successful for r in reply.results), [r.reason for r in reply.results]
    assert get("ema_alpha", "top_k") == [0.25, 3]

    # Vocabulary: with one class every pixel must be class 0 (the text is re-encoded live).
    assert any(max(m.data) > 0 for m in masks), "precondition: the 4-class masks use more than class 0"
    reply = call(set_client, SetParameters.Request(parameters=[_parameter("classes", ["road"])]))
    assert reply.results[0].successful, reply.results[0].reason
    seen = len(masks)
    probe.spin_until(lambda: len(masks) >= seen + 2, 60, "two masks after the vocabulary change")
    assert max(masks[-1].data) == 0 and masks[-1].encoding == "mono8"
    assert (masks[-1].height, masks[-1].width) == FRAME_SIZE

    # --- invalid values: refused with a reason, nothing changes
    refused = {
        "distance": ("manhattan", "not one of"),
        "classes": (["car", "road", "car"], "duplicate"),
        "top_k": (0, "range"),
        "model_config": ("vitl14_336", "read-only"),
    }
    for name, (value, why) in refused.items():
        reply = call(set_client, SetParameters.Request(parameters=[_parameter(name, value)]))
        result = reply.results[0]
        assert not result.successful, f"{name}={value!r} was accepted"
        assert why in result.reason, result.reason
    # An atomic request with one bad value applies none of them.
    reply = call(atomic_client, SetParametersAtomically.Request(parameters=[
        _parameter("switch_threshold", 0.9), _parameter("distance", "manhattan")]))
    assert not reply.result.successful and "distance" in reply.result.reason

    assert get("distance", "top_k", "model_config", "switch_threshold") == [
        "euclidean", 3, "tiny", 0.123]
    assert get("classes") == [["road"]]
    seen = len(scores)
    probe.spin_until(lambda: len(scores) >= seen + 2, 60, "two more support scores")
    assert math.isclose(scores[-1].switch_threshold, 0.123, rel_tol=1e-6)
    assert max(masks[-1].data) == 0
    assert probe.diag()["state"] == "running"
    code, _ = node.stop()
    assert code == 0, node.log()
