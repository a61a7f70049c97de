"""Clean start and stop of the executables (scripts/*, what `ros2 run` starts), each in a real process.

- `--help` prints the usage (parameters, topics, the launch file) and exits 0 without starting ROS
  (rclpy is never imported) or importing torch;
- the node module, a parameter error and the node's first log line come without torch (it is imported where the
  engine is built, after "lifecycle: configure");
- SIGINT or SIGTERM while Python imports torch (the engine build, on its own thread) ends the process with exit
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

# `python -c IMPORT_WATCH MODULES SCRIPT ARGS...` runs SCRIPT as `ros2 run` does, after an import hook that
# writes "IMPORTING MODULE" on stderr when one of MODULES (comma-separated) starts importing.
IMPORT_WATCH = textwrap.dedent("""
    import runpy, sys
    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name in WATCHED:
                sys.stderr.write("IMPORTING " + name + "\\n"); sys.stderr.flush()
                WATCHED.remove(name)
            return None
    WATCHED = set(sys.argv[1].split(","))
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
    done = subprocess.run([sys.executable, "-c", IMPORT_WATCH, "rclpy,torch", str(SCRIPTS / script), "--help"],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: ros2 run semla_ros {script}")
    for text in expected:
        assert text in done.stdout, text
    assert "IMPORTING rclpy" not in done.stderr, done.stderr   # ROS never started
    assert "IMPORTING torch" not in done.stderr, done.stderr   # nor torch (seconds of start-up)


def test_node_module_imports_without_torch():
    code = "import sys, semla_ros.ros.node; print(sorted(m for m in ('torch', 'rclpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['rclpy']"   # the node's ROS side is loaded, the network's torch is not


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


def _wait_for_line(stream, text: str, timeout: float) -> list[str]:
    """The lines read up to and including the first one containing `text`."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError(f"process ended before {text!r}:\n" + "".join(lines))
        lines.append(line)
        if text in line:
            return lines
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


def _node_output_until(args: list[str], wait_for: str) -> list[str]:
    """The node's output (watched for torch's import) up to the line containing `wait_for`; then SIGINT."""
    proc = subprocess.Popen([sys.executable, "-c", IMPORT_WATCH, "torch", str(SCRIPTS / "semla_segmenter"), *args],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _wait_for_line(proc.stdout, wait_for, 120)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lines


def test_parameter_error_is_reported_without_torch(ros_domain_id):
    lines = _node_output_until([*TINY, "-p", "navigator:=bogus"], "lifecycle: configure failed")
    assert any("invalid parameter navigator" in line for line in lines), "".join(lines)
    assert not any("IMPORTING torch" in line for line in lines), "".join(lines)


def test_first_log_line_comes_before_torch(ros_domain_id):
    """torch is imported by the engine build, which configure starts after its first log line."""
    lines = _node_output_until(TINY, "IMPORTING torch")
    logged = [line for line in lines if "[INFO]" in line or "[ERROR]" in line]
    assert logged and "lifecycle: configure (from unconfigured)" in logged[0], "".join(lines)


def test_demo_camera_survives_a_double_sigint(ros_domain_id):
    """Launch forwards a second SIGINT while the node is torn down."""
    _signalled([sys.executable, str(SCRIPTS / "semla_demo_camera"), "--ros-args", "-p", "rate_hz:=20.0",
                "-p", "height:=48", "-p", "width:=64"], "playing", signal.SIGINT, signal.SIGINT)
