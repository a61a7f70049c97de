"""One guard for every callback and service of the node: an unexpected exception becomes a counted
error, a diagnostics entry and, for a service, a failure answer; never an exit.

Why: rclpy re-raises a callback's exception out of `executor.spin_once`, which ends the node, and a
service whose callback raised sends no answer, so its client waits for ever. One bad message or
request must not take the robot's perception down: a SetParameters request with an unknown type
code, for instance, raises inside rclpy's own parameter service (`Parameter.from_parameter_msg`),
before any code of ours runs. Expected problems (bad frames, refused parameter values) are handled
where they happen; this is for the ones nobody expected.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from rcl_interfaces.msg import SetParametersResult

from semla_ros.ros.diagnostics import Health, NodeStats

LOG_THROTTLE_S = 5.0


def failure_response(request: Any, response: Any, reason: str) -> Any:
    """Fill a service response so that its client learns the request failed, and why.

    Parameter services answer per parameter: the parameters rclpy already answered keep their
    results, every other one is reported as not set. Trigger-like responses get success=False.
    """
    if hasattr(response, "results") and hasattr(request, "parameters"):          # SetParameters
        answered = len(response.results)
        response.results = list(response.results) + [
            SetParametersResult(successful=False, reason=reason) for _ in request.parameters[answered:]]
    elif isinstance(getattr(response, "result", None), SetParametersResult):      # SetParametersAtomically
        response.result = SetParametersResult(successful=False, reason=reason)
    elif hasattr(response, "success") and hasattr(response, "message"):           # std_srvs/Trigger, ...
        response.success, response.message = False, reason
    return response


class CallbackGuard:
    """Wraps callables so that an exception is recorded instead of propagating. Thread-safe (the
    counters and health entries it writes are)."""

    def __init__(self, stats: NodeStats, health: Health, logger):
        self._stats = stats
        self._health = health
        self._logger = logger
        self._loggers: dict[str, Any] = {}

    def record(self, name: str, error: BaseException) -> str:
        """Count the error under `name`, show the latest one in /diagnostics (WARN) and log it
        (throttled per name). Returns the one-line description."""
        count = self._stats.callback_error(name)
        text = f"{type(error).__name__}: {error}"
        self._health.set(f"callback_{name}", [("warn", f"{name}: unexpected error ({count} so far), "
                                                       f"last: {text}")])
        logger = self._loggers.get(name)
        if logger is None:   # one child logger per name: rclpy throttles per logger and call site
            logger = self._loggers[name] = self._logger.get_child(name)
        logger.error(f"unexpected error, the node carries on ({count} so far): {text}",
                     throttle_duration_sec=LOG_THROTTLE_S)
        return text

    def callback(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """A subscription, timer or thread-loop callable that records its exceptions and returns None."""
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except Exception as error:
                self.record(name, error)
                return None
        return guarded

    def service(self, name: str, function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A service callback that answers a failure (with the reason) instead of raising."""
        @functools.wraps(function)
        def guarded(request, response):
            try:
                return function(request, response)
            except Exception as error:
                text = self.record(name, error)
                return failure_response(request, response, f"request refused: {text}")
        return guarded

    def services_of(self, node) -> None:
        """Guard every service the node has (call once, after creating them), rclpy's own included:
        parameters, type description. rclpy looks `service.callback` up for each request, so
        replacing it is enough."""
        for service in node.services:
            service.callback = self.service(service.srv_name.rsplit("/", 1)[-1], service.callback)
