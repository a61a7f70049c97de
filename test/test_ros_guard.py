"""The node's callback guard and background job, in this process: an unexpected exception is counted,
named in the health entries and answered as a failure; rclpy's own parameter services are guarded.
The real-process cases (the node stays up, its clients get answers) are in test_ros_node_faults.py."""
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue, SetParametersResult  # noqa: E402
from rcl_interfaces.srv import SetParameters, SetParametersAtomically  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from semla_ros.ros.background import BackgroundJob  # noqa: E402
from semla_ros.ros.diagnostics import Health, NodeStats  # noqa: E402
from semla_ros.ros.guard import CallbackGuard  # noqa: E402


class Logger:
    """Records what the guard logs (the guard's output under test is the record, not the logger)."""

    def __init__(self, name="node"):
        self.name, self.lines = name, []

    def get_child(self, name):
        child = Logger(f"{self.name}.{name}")
        child.lines = self.lines
        return child

    def error(self, message, **_):
        self.lines.append((self.name, message))


def _guard():
    stats, health, logger = NodeStats(), Health(), Logger()
    return CallbackGuard(stats, health, logger), stats, health, logger


def test_callback_error_is_counted_named_and_logged():
    guard, stats, health, logger = _guard()

    def broken(msg):
        raise KeyError(msg)

    callback = guard.callback("image", broken)
    assert callback("frame-1") is None and callback("frame-2") is None
    assert guard.callback("image", lambda msg: msg * 2)(21) == 42   # no error: the result passes through
    assert stats.callback_errors["image"] == 2
    rows = dict(stats.values(0))
    assert rows["callback_errors"] == "2" and rows["callback_errors_image"] == "2"
    level, message = health.worst()
    assert level == "warn" and "image" in message and "KeyError: 'frame-2'" in message and "2 so far" in message
    assert [name for name, _ in logger.lines] == ["node.image", "node.image"]


def test_service_errors_answer_a_failure_with_the_reason():
    guard, stats, _, _ = _guard()

    def broken(request, response):
        raise RuntimeError("boom")

    reply = guard.service("adapt_now", broken)(Trigger.Request(), Trigger.Response())
    assert not reply.success and reply.message == "request refused: RuntimeError: boom"

    bad = Parameter(name="x", value=ParameterValue(type=200))
    good = Parameter(name="y", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.0))

    def partly(request, response):   # answers the first parameter, then fails like rclpy does
        response.results.append(SetParametersResult(successful=True))
        raise ValueError("200 is not a valid Parameter.Type")

    reply = guard.service("set_parameters", partly)(SetParameters.Request(parameters=[good, bad, good]),
                                                    SetParameters.Response())
    assert [r.successful for r in reply.results] == [True, False, False]
    assert "200 is not a valid Parameter.Type" in reply.results[1].reason
    reply = guard.service("set_parameters_atomically", broken)(SetParametersAtomically.Request(parameters=[bad]),
                                                               SetParametersAtomically.Response())
    assert not reply.result.successful and "boom" in reply.result.reason
    assert dict(stats.callback_errors) == {"adapt_now": 1, "set_parameters": 1, "set_parameters_atomically": 1}


def test_rclpy_parameter_services_are_guarded():
    """rclpy's own set_parameters raises on an unknown type code; guarded, it answers."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("guarded", context=context)
        node.declare_parameter("threshold", 0.5)
        guard, stats, health, _ = _guard()
        guard.services_of(node)
        service = next(s for s in node.services if s.srv_name.endswith("/set_parameters"))
        bad = Parameter(name="threshold", value=ParameterValue(type=200))
        reply = service.callback(SetParameters.Request(parameters=[bad]), SetParameters.Response())
        assert not reply.results[0].successful and "200 is not a valid Parameter.Type" in reply.results[0].reason
        assert node.get_parameter("threshold").value == 0.5
        assert stats.callback_errors["set_parameters"] == 1
        assert "set_parameters" in health.worst()[1]
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_background_job_runs_one_at_a_time_on_a_daemon_thread():
    job = BackgroundJob("test-job")
    release = threading.Event()
    future = job.start("first", release.wait, 10)
    assert future is not None and job.running and job.what == "first"
    assert job.start("second", lambda: None) is None          # refused while the first runs
    assert [t.daemon for t in threading.enumerate() if t.name == "test-job"] == [True]
    release.set()
    assert future.result(timeout=5) is True
    deadline = time.monotonic() + 5
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)
    failing = job.start("third", lambda: 1 / 0)
    assert failing is not None
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
