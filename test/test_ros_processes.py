"""semla_ros.ros.processes, the one place the tests, `semla-demo` and `semla-bench node` start and stop
processes: plain Python children here (no ROS), each told when to go by a file, not by time."""
from __future__ import annotations

import signal
import sys
import time

from semla_ros.ros import processes

# Writes a file once its SIGINT handler is in place, then waits; exits 3 on SIGINT (or ignores it).
CHILD = """
import signal, sys, time
from pathlib import Path
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, lambda *_: sys.exit(3))
print("ready", flush=True)
Path(sys.argv[1]).write_text("ready")
while True:
    time.sleep(0.05)
"""


def _start(tmp_path, mode: str):
    ready = tmp_path / "ready"
    log = tmp_path / "child.log"
    proc = processes.start([sys.executable, "-c", CHILD, str(ready), mode], log)
    while not ready.exists():   # the child says when its handler is installed
        assert proc.poll() is None, log.read_text()
        time.sleep(0.01)
    return proc, log


def test_sigint_reaches_the_child_and_its_exit_code_comes_back(tmp_path):
    proc, log = _start(tmp_path, "exit")
    code, seconds = processes.stop(proc)
    assert code == 3 and seconds < 10
    assert "ready" in log.read_text()
    assert processes.stop(proc)[0] == 3   # already gone: no signal, the same exit code
    assert processes.exited(proc, "child", log).startswith("child exited with 3:\nready")


def test_a_child_that_ignores_sigint_is_killed_after_the_timeout(tmp_path):
    proc, _ = _start(tmp_path, "ignore")
    assert processes.exited(proc, "child") is None
    code, _ = processes.stop(proc, timeout=0.5)
    assert code == -signal.SIGKILL


def test_child_environment_and_commands():
    env = processes.child_env({"PYTHONPATH": "/elsewhere", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, EXTRA="1")
    assert env["PYTHONPATH"].split(":") == [str(processes.REPO), "/elsewhere"]
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and env["EXTRA"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert processes.child_env({})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert processes.node_command("p.yaml", "t", "--log-level", "debug")[1:] == [
        "-m", "semla_ros.ros.node", "--ros-args", "--params-file", "p.yaml", "-r", "__ns:=/t", "--log-level", "debug"]
    assert processes.demo_camera_command("demo", rate_hz=10.0, loop="false")[-4:] == [
        "-p", "rate_hz:=10.0", "-p", "loop:=false"]
    assert processes.stop(None) == (None, 0.0)
