"""Clean start and stop of the executables (scripts/*, what `ros2 run` starts), each in a real process.

- `--help` prints the usage (parameters, topics, the launch file) and exits 0 without starting ROS
  (rclpy is never imported);
- SIGINT or SIGTERM while Python imports torch (the node module's imports) ends the process with exit
  code 0 and no traceback; the moment is deterministic: the child writes a marker from an import hook
  when `torch` starts importing and the test signals it then;
- the demo camera survives a double SIGINT (what launch sends on Ctrl-C) with exit code 0.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from ros_harness import REPO, child_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SCRIPTS = REPO / "scripts"

# `python -c IMPORT_WATCH MODULE SCRIPT ARGS...` runs SCRIPT as `ros2 run` does, after an import hook that
# writes "IMPORTING MODULE" on stderr when MODULE starts importing.
IMPORT_WATCH = textwrap.dedent("""
    import runpy, sys
    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name == WATCHED:
                sys.stderr.write("IMPORTING " + name + "\\n"); sys.stderr.flush()
                sys.meta_path.remove(self)
            return None
    WATCHED = sys.argv[1]
    sys.meta_path.insert(0, Watch())
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.mark.parametrize("script, expected", [
    ("semla_segmenter", ["segment.launch.py", "library_path", "mask", "qos_overrides", "adapt_now"]),
    ("semla_segmenter_managed", ["segment.launch.py", "managed:=true", "ros2 lifecycle set", "library_path"]),
    ("semla_demo_camera", ["demo.launch.py", "sequence", "ground_truth"]),
])
def test_help_prints_usage_and_exits_0_without_ros(script, expected):
    done = subprocess.run([sys.executable, "-c", IMPORT_WATCH, "rclpy", str(SCRIPTS / script), "--help"],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: ros2 run semla_ros {script}")
    for text in expected:
        assert text in done.stdout, text
    assert "IMPORTING rclpy" not in done.stderr, done.stderr   # ROS never started


def test_help_after_ros_args_is_not_ours():
    from semla_ros.ros.process import wants_help

    assert wants_help(["prog", "-h"]) and wants_help(["prog", "--help", "--ros-args", "-p", "a:=1"])
    assert not wants_help(["prog", "--ros-args", "--help"])   # rcl's own --ros-args options are not ours


def _signalled(command: list[str], wait_for: str, *signals) -> None:
    """Start `command`, wait for `wait_for` on its output, send `signals`: exit code 0 and no traceback."""
    proc = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_line(proc.stdout, wait_for, 60)
        for sig in signals:
            proc.send_signal(sig)
        code = proc.wait(30)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out


def _wait_for_line(stream, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError(f"process ended before {text!r}")
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout:.0f} s")


TINY = ["--ros-args", "-p", "model_config:=tiny", "-p", "allow_random_weights:=true", "-p", "device:=cpu"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_importing_torch_exits_0_without_traceback(sig, ros_domain_id):
    _signalled([sys.executable, "-c", IMPORT_WATCH, "torch", str(SCRIPTS / "semla_segmenter"), *TINY],
               "IMPORTING torch", sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_model_loads_exits_0_without_traceback(sig, ros_domain_id):
    """Signalled once configure (the model build, on a thread of its own) has started."""
    _signalled([sys.executable, str(SCRIPTS / "semla_segmenter"), *TINY], "lifecycle: configure", sig)


def test_demo_camera_survives_a_double_sigint(ros_domain_id):
    """Launch forwards a second SIGINT while the node is torn down."""
    _signalled([sys.executable, str(SCRIPTS / "semla_demo_camera"), "--ros-args", "-p", "rate_hz:=20.0",
                "-p", "height:=48", "-p", "width:=64"], "playing", signal.SIGINT, signal.SIGINT)
