"""The parameters rclpy owns (use_sim_time, start_type_description_service, qos_overrides.* where declared)
through the node's parameter services, as `ros2 param` drives them (test/ros_param_cli.py), node in its
own process.

What is asserted:
- every parameter the node lists that is not in our table is set to a changed value and back: writable
  ones are accepted, read-only ones refused with a reason; the node keeps publishing masks throughout;
- use_sim_time=true set live switches the node's clock to /clock (diagnostics stamped with the test's
  simulated time) and false switches it back;
- `ros2 param dump` of the node, then `ros2 param load` of that dump into it: every live parameter is
  accepted, every read-only one refused for being read-only and nothing else, and the node keeps
  running; the dump then starts a second node (`--params-file dump.yaml`) with the same values;
- set while the model loads (use_sim_time, a live setting and the vocabulary; the node holds its load
  until the test says go): the node reaches 'running' and the masks use the vocabulary set during the
  load (the node's debug log proves the set came before the model was ready).
"""
from __future__ import annotations

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

import ros_param_cli as cli  # noqa: E402
from ros_harness import HOLD_LOAD_ENV, start_streaming, tiny_node_params  # noqa: E402

from semla_ros.ros.processes import HOLD_LOAD_LOG  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NODE = "/t/semla_segmenter"
SIM_START_S = 1000


def _changed(value):
    """A different value of the same ROS type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0
    if isinstance(value, str):
        return value + "_x"
    return value


def _as_cli_string(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


class SimClock:
    """Publishes /clock (rosgraph_msgs/Clock) from the probe, starting at SIM_START_S and running at wall rate."""

    def __init__(self, probe):
        import time

        from rosgraph_msgs.msg import Clock

        publisher = probe.node.create_publisher(Clock, "/clock", 10)
        start = time.monotonic()

        def tick():
            elapsed = time.monotonic() - start
            message = Clock()
            message.clock.sec, message.clock.nanosec = SIM_START_S + int(elapsed), int((elapsed % 1) * 1e9)
            publisher.publish(message)

        self.timer = probe.node.create_timer(0.05, tick)


def _diag_stamp(probe) -> float:
    stamp = probe.diagnostics[-1].header.stamp
    return stamp.sec + stamp.nanosec * 1e-9


def test_ros_owned_parameters_live_dump_load_and_restart_from_the_dump(tmp_path, probe, run_node, run_camera):
    from rclpy.parameter import parameter_dict_from_yaml_file, parameter_value_to_python

    from semla_ros.ros.parameters import SPEC_BY_NAME

    node = run_node(tiny_node_params(navigator="tower"))
    masks, _ = start_streaming(probe, node, camera=run_camera)

    def still_publishing(what, process=node):
        seen = len(masks)
        probe.spin_until(lambda: len(masks) >= seen + 2, 60, f"two masks after {what}")
        assert process.proc.poll() is None, process.log()

    names = cli.list_names(probe, NODE)
    ros_owned = [n for n in names if n not in SPEC_BY_NAME]
    assert "use_sim_time" in ros_owned and set(SPEC_BY_NAME) <= set(names)
    descriptors = cli.describe(probe, NODE, ros_owned)
    for name in ros_owned:
        [value] = cli._result(probe, cli._client(probe, NODE).get_parameters([name]), "get").values
        value = parameter_value_to_python(value)
        for new in (_changed(value), value):
            ok, reason = cli.set_value(probe, NODE, name, _as_cli_string(new))
            if descriptors[name].read_only:
                assert not ok and "read-only" in reason, (name, reason)
            else:
                assert ok, (name, reason)
    still_publishing("setting the ROS-owned parameters")

    # use_sim_time live: the node's clock follows /clock, then the system clock again.
    clock = SimClock(probe)
    assert cli.set_value(probe, NODE, "use_sim_time", "true") == (True, "")
    seen = len(probe.diagnostics)
    probe.spin_until(lambda: len(probe.diagnostics) >= seen + 2, 30, "diagnostics on simulated time")
    assert SIM_START_S <= _diag_stamp(probe) < SIM_START_S + 600
    still_publishing("use_sim_time=true")
    assert cli.set_value(probe, NODE, "use_sim_time", "false") == (True, "")
    probe.node.destroy_timer(clock.timer)
    seen = len(probe.diagnostics)
    probe.spin_until(lambda: len(probe.diagnostics) >= seen + 2, 30, "diagnostics on system time")
    assert _diag_stamp(probe) > 1e9

    # Live values worth finding again after the reload.
    assert cli.set_value(probe, NODE, "top_k", "3")[0] and cli.set_value(probe, NODE, "ema_alpha", "0.25")[0]

    # ros2 param dump, then ros2 param load of that dump.
    text = cli.dump(probe, NODE)
    dumped = yaml.safe_load(text)[NODE]["ros__parameters"]
    assert dumped["use_sim_time"] is False and dumped["top_k"] == 3 and dumped["ema_alpha"] == 0.25
    dump_file = tmp_path / "dump.yaml"
    dump_file.write_text(text)
    results = cli.load(probe, NODE, dump_file)
    assert {name for name, _, _ in results} == set(names)
    read_only = {n for n in SPEC_BY_NAME if SPEC_BY_NAME[n].read_only} | {
        n for n in ros_owned if descriptors[n].read_only}
    for name, ok, reason in results:
        if name in read_only:
            assert not ok and "read-only" in reason, (name, reason)
        else:
            assert ok, (name, reason)
    still_publishing("loading the dump")
    probe.spin_until(lambda: probe.diag().get("state") == "running", 10, "state running after the load")

    # The dump as a params file of a new node (the other way a dump is reloaded).
    node_code, _ = node.stop()
    assert node_code == 0, node.log()
    restarted = run_node({}, namespace="t", name="restarted", ros_args=("--params-file", str(dump_file)))
    probe.diagnostics.clear()
    probe.wait_running(restarted)
    client = cli._client(probe, NODE)
    flat = {name: parameter_value_to_python(p.value) for name, p in   # qos_overrides.* nest in the dump
            parameter_dict_from_yaml_file(str(dump_file), True, target_nodes=[NODE]).items()}
    # qos_overrides.* are declared when the node activates; "running" may also be the stopped node's last
    # diagnostics still queued in the probe, so wait for the restarted node's own parameter list.
    probe.spin_until(lambda: set(flat) <= set(cli.list_names(probe, NODE)), 90,
                     "the restarted node to declare every dumped parameter")
    reply = cli._result(probe, client.get_parameters(list(flat)), "get after restart")
    again = dict(zip(flat, (parameter_value_to_python(v) for v in reply.values), strict=True))
    assert again == flat
    still_publishing("the restart from the dump", restarted)


def test_set_while_the_model_loads(tmp_path, probe, run_node, run_camera):
    """The node holds its model load (HOLD_LOAD_ENV) until the set has been answered: no race with the load."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    SimClock(probe)   # use_sim_time will be on: the node's timers (diagnostics) run on /clock
    masks = probe.collect(Image, "/t/mask", QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    probe.watch_diagnostics()
    go = tmp_path / "load"
    node = run_node(tiny_node_params(navigator="tower"), ros_args=("--log-level", "debug"),
                    env={HOLD_LOAD_ENV: str(go)})
    client = probe.node.create_client(SetParameters, f"{NODE}/set_parameters")
    probe.spin_until(client.service_is_ready, 60, "the node's set_parameters service")
    probe.spin_until(lambda: HOLD_LOAD_LOG in node.log(), 60, "the node to hold its model load")
    future = client.call_async(SetParameters.Request(parameters=[
        Parameter("use_sim_time", value=True).to_parameter_msg(),
        Parameter("top_k", value=2).to_parameter_msg(),
        Parameter("classes", value=["road"]).to_parameter_msg()]))
    probe.spin_until(future.done, 60, "the reply to the set during loading")
    assert all(r.successful for r in future.result().results), [r.reason for r in future.result().results]
    assert "segmenter ready" not in node.log(), "the model loaded before the hold was released"
    go.touch()
    probe.wait_running(node)
    log = node.log()
    during = log.find("parameters set: ")
    assert 0 <= during < log.find("segmenter ready") and "top_k=2" in log[during:during + 200], log
    assert SIM_START_S <= _diag_stamp(probe) < SIM_START_S + 600

    run_camera("day:0", 5)
    probe.spin_until(lambda: len(masks) >= 2, 60, "masks after the load")
    assert all(max(m.data) == 0 for m in masks), "the vocabulary set during the load is not in use"
    assert probe.diag()["state"] == "running"
