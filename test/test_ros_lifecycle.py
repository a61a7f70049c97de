"""The managed node through its lifecycle services (`change_state`, `get_state`, what `ros2 lifecycle set`
and nav2's lifecycle manager call), node in its own process.

- `semla_segmenter_managed` starts unconfigured (no model, no mask publisher); configure loads the model,
  activate brings masks; deactivate stops consuming frames (the node's received-frames counter stands
  still while the camera keeps publishing); activate again resumes without a reload (one "segmenter
  ready" in the log); cleanup frees the model (adapt_now refuses: not running); configure + activate
  work again; shutdown from active ends in finalized with the process up and a clean exit afterwards;
- the plain node with a missing checkpoint: its autostart configure failed, a configure through the
  service fails too (success false), the reason is in /diagnostics, shutdown from unconfigured works.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import REPO, NodeProcess, Probe, call_trigger, child_env, start_camera, stop_all, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NODE = "/t/semla_segmenter"


class ManagedNodeProcess(NodeProcess):
    """scripts/semla_segmenter_managed (what `ros2 run` and launch_ros' LifecycleNode start) in /t."""

    def __init__(self, tmp_path: Path, params: dict):   # not super().__init__: it starts the plain node
        self.namespace = "t"
        self.params_file = tmp_path / "managed_params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp_path / "managed.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "semla_segmenter_managed"), "--ros-args", "--params-file",
             str(self.params_file), "-r", "__ns:=/t"], stdout=self._log, stderr=subprocess.STDOUT, env=child_env())


class Lifecycle:
    """Clients of the node's lifecycle services."""

    def __init__(self, probe: Probe, node: str = NODE):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.probe = probe
        self._change = probe.node.create_client(ChangeState, f"{node}/change_state")
        self._get = probe.node.create_client(GetState, f"{node}/get_state")
        probe.spin_until(lambda: self._change.service_is_ready() and self._get.service_is_ready(), 30,
                         "the lifecycle services")

    def _call(self, client, request, what: str):
        future = client.call_async(request)
        self.probe.spin_until(future.done, 120, what)
        return future.result()

    def set(self, label: str) -> bool:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.label = label
        return self._call(self._change, request, f"the {label} transition").success

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request(), "get_state").current_state.label


def _diag_after(probe: Probe, lifecycle_state: str) -> dict:
    """The first diagnostics published after this call that report `lifecycle_state`."""
    probe.diagnostics.clear()
    probe.spin_until(lambda: probe.diag().get("lifecycle_state") == lifecycle_state, 30,
                     f"diagnostics reporting {lifecycle_state}")
    return probe.diag()


def _wait_gone(probe: Probe, kind: str, topic: str) -> None:
    """Until the graph no longer lists the node's endpoint (its removal reaches the probe asynchronously)."""
    probe.spin_until(lambda: not getattr(probe.node, f"get_{kind}_info_by_topic")(topic), 30,
                     f"the {kind[:-1]} on {topic} to go")


def test_managed_node_through_its_transitions(ros_domain_id, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node = ManagedNodeProcess(tmp_path, tiny_node_params())
    probe = Probe()
    camera = None
    try:
        masks = probe.collect(Image, "/t/mask", QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
        probe.watch_diagnostics()
        lifecycle = Lifecycle(probe)
        assert lifecycle.state() == "unconfigured"
        diag = _diag_after(probe, "unconfigured")
        assert diag["state"] == "unconfigured" and "segmenter ready" not in node.log()
        assert not probe.node.get_publishers_info_by_topic("/t/mask")

        assert lifecycle.set("configure") and lifecycle.state() == "inactive"
        assert node.log().count("segmenter ready") == 1
        assert lifecycle.set("activate") and lifecycle.state() == "active"
        camera = start_camera("day:0", 5)
        probe.spin_until(lambda: len(masks) >= 2, 60, "masks while active")
        assert _diag_after(probe, "active")["state"] == "running"

        assert lifecycle.set("deactivate") and lifecycle.state() == "inactive"
        received = int(_diag_after(probe, "inactive")["frames_received"])
        probe.spin_for(2.0)   # the camera publishes 10 frames meanwhile
        assert int(_diag_after(probe, "inactive")["frames_received"]) == received
        _wait_gone(probe, "subscriptions", "/t/image")

        count = len(masks)
        assert lifecycle.set("activate")
        probe.spin_until(lambda: len(masks) >= count + 2, 60, "masks after activating again")
        assert node.log().count("segmenter ready") == 1   # the model was kept: no reload

        assert lifecycle.set("deactivate") and lifecycle.set("cleanup") and lifecycle.state() == "unconfigured"
        reply = call_trigger(probe, f"{NODE}/adapt_now")
        assert not reply.success and "not running (unconfigured)" in reply.message
        _wait_gone(probe, "publishers", "/t/mask")

        assert lifecycle.set("configure") and lifecycle.set("activate")
        assert node.log().count("segmenter ready") == 2
        count = len(masks)
        probe.spin_until(lambda: len(masks) >= count + 2, 60, "masks after a second configure")

        assert lifecycle.set("shutdown") and lifecycle.state() == "finalized"
        assert _diag_after(probe, "finalized")["state"] == "finalized"
        assert node.proc.poll() is None
    finally:
        code = stop_all(probe, node, camera)
    assert code == 0, node.log()


def test_failed_configure_is_refused_with_the_reason(ros_domain_id, tmp_path):
    node = NodeProcess(tmp_path, tiny_node_params(checkpoint=str(tmp_path / "absent.pth"),
                                                  allow_random_weights=False))
    probe = Probe()
    try:
        probe.watch_diagnostics()
        lifecycle = Lifecycle(probe)
        probe.spin_until(lambda: probe.diag().get("state", "").startswith("not running"), 60,
                         "the autostart configure to fail")
        assert lifecycle.state() == "unconfigured"
        assert not lifecycle.set("configure")
        diag = _diag_after(probe, "unconfigured")
        assert diag["level"] == 2 and "absent.pth" in diag["message"], diag
        assert "lifecycle: configure failed" in node.log()
        assert lifecycle.set("shutdown") and lifecycle.state() == "finalized"
        assert node.proc.poll() is None
    finally:
        assert stop_all(probe, node) == 0
