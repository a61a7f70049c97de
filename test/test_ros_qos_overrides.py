"""`qos_overrides` parameters (rclpy's QoSOverridingOptions, image_pipeline's convention) on the image
subscription and the mask, support_score, coverage and overlay publishers, node in its own process.

Asserted through the ROS graph (`get_subscriptions_info_by_topic` / `get_publishers_info_by_topic`): the
defaults stay what they were (input best effort depth 1, outputs reliable depth 5) and an override in the
params file changes exactly the endpoint it names; an invalid override fails configure with the reason in
/diagnostics and the node stays up.
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import NodeProcess, Probe, stop_all, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _endpoint(probe: Probe, kind: str, topic: str):
    infos = []

    def found():
        infos[:] = getattr(probe.node, f"get_{kind}_info_by_topic")(topic)
        return bool(infos)

    probe.spin_until(found, 90, f"the node's {kind[:-1]} on {topic}")
    [info] = infos
    return info.qos_profile


def test_defaults_and_overrides_reach_the_endpoints(ros_domain_id, tmp_path):
    """The graph carries reliability and durability (history depth stays local to the endpoint)."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    overrides = {"/t/image": {"subscription": {"reliability": "reliable", "depth": 3}}}
    overrides.update({topic: {"publisher": {"reliability": "best_effort"}}   # a dict each: no YAML aliases
                      for topic in ("/t/mask", "/t/overlay", "/t/coverage")})
    node = NodeProcess(tmp_path, {**tiny_node_params(), "qos_overrides": overrides})
    plain = NodeProcess(tmp_path, tiny_node_params(), namespace="p", name="plain")
    probe = Probe()
    try:
        assert _endpoint(probe, "subscriptions", "/t/image").reliability == ReliabilityPolicy.RELIABLE
        for topic in ("/t/mask", "/t/overlay", "/t/coverage"):
            assert _endpoint(probe, "publishers", topic).reliability == ReliabilityPolicy.BEST_EFFORT, topic
        assert _endpoint(probe, "publishers", "/t/support_score").reliability == ReliabilityPolicy.RELIABLE

        assert _endpoint(probe, "subscriptions", "/p/image").reliability == ReliabilityPolicy.BEST_EFFORT
        for topic in ("/p/mask", "/p/overlay", "/p/coverage", "/p/support_score"):   # today's defaults
            profile = _endpoint(probe, "publishers", topic)
            assert (profile.reliability, profile.durability) == (ReliabilityPolicy.RELIABLE,
                                                                 DurabilityPolicy.VOLATILE), topic
    finally:
        stop_all(probe, plain)
        node.stop()


def test_an_invalid_override_fails_configure_with_the_reason(ros_domain_id, tmp_path):
    overrides = {"/t/mask": {"publisher": {"reliability": "sometimes"}}}
    node = NodeProcess(tmp_path, {**tiny_node_params(), "qos_overrides": overrides})
    probe = Probe()
    probe.watch_diagnostics()
    try:
        probe.spin_until(lambda: probe.diag().get("state", "").startswith("not running"), 60,
                         "the node to report the failed configure")
        diag = probe.diag()
        assert diag["state"] == "not running: invalid qos_overrides", diag
        assert diag["lifecycle_state"] == "unconfigured"
        assert any("sometimes" in value for key, value in diag.items() if key.startswith("error_qos_overrides")), diag
        assert node.proc.poll() is None
    finally:
        assert stop_all(probe, node) == 0
