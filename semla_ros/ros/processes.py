"""Start, signal and stop the node and camera processes: the one place the tests, `semla-demo` and
`semla-bench node` do it.

Plain subprocesses, no rclpy here: what the processes publish is listened to by the caller. A child gets
the caller's environment plus this checkout on PYTHONPATH, unbuffered output and loopback-only discovery
(unless the caller chose another range); its ROS_DOMAIN_ID is the caller's.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_MODULE = "semla_ros.ros.node"
SYNTHETIC_CAMERA_MODULE = "semla_ros.ros.synthetic_camera"
DEMO_CAMERA_MODULE = "semla_ros.ros.demo_camera"
# Tests only: a node started with this variable set to a path logs HOLD_LOAD_LOG and builds its model only
# once that file exists, so a test can act while the model loads without racing the load.
HOLD_LOAD_ENV = "SEMLA_TEST_HOLD_LOAD_UNTIL"
HOLD_LOAD_LOG = "model load held until this file exists"


def child_env(base: dict | None = None, **extra: str) -> dict:
    """The environment for a child process: `base` (default: this process's), this checkout first on
    PYTHONPATH, unbuffered output, loopback discovery unless set, plus `extra`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def node_command(params_file: Path | str | None, namespace: str, *ros_args: str) -> list[str]:
    """`python -m semla_ros.ros.node` in /<namespace>, with a params file (None: only `ros_args`)."""
    files = ["--params-file", str(params_file)] if params_file is not None else []
    return [sys.executable, "-m", NODE_MODULE, "--ros-args", *files, "-r", f"__ns:=/{namespace}", *ros_args]


def synthetic_camera_command(schedule: str, rate: float, size: str, topic: str, *options: str) -> list[str]:
    """The synthetic camera (`semla_ros.ros.synthetic_camera`): `size` is WIDTHxHEIGHT."""
    return [sys.executable, "-m", SYNTHETIC_CAMERA_MODULE, "--schedule", schedule, "--rate", str(rate),
            "--size", size, "--topic", topic, *options]


def demo_camera_command(namespace: str, **parameters) -> list[str]:
    """The demo-world camera (`semla_ros.ros.demo_camera`) in /<namespace> with these ROS parameters."""
    values = [arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")]
    return [sys.executable, "-m", DEMO_CAMERA_MODULE, "--ros-args", "-r", f"__ns:=/{namespace}", *values]


def start(command: list[str], log_path: Path | None = None, env: dict | None = None, capture: bool = False,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start `command`; stdout and stderr go to `log_path` (or a pipe with `capture`, else nowhere).

    `env` defaults to child_env()."""
    env = child_env() if env is None else env
    if capture:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    if log_path is None:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log_path, "w") as log:   # the child holds its own copy of the file
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int | None, float]:
    """Send `sig` (SIGINT: a ROS node's clean shutdown), kill after `timeout` s; return (exit code, seconds
    until the process was gone). A process already gone gets no signal; None gives (None, 0.0)."""
    if proc is None:
        return None, 0.0
    start_time = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return code, time.monotonic() - start_time


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a process's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def exited(proc: subprocess.Popen, name: str, log_path: Path | None = None) -> str | None:
    """None while `proc` runs; once it has exited, a message with its exit code and log tail."""
    if proc.poll() is None:
        return None
    return f"{name} exited with {proc.returncode}" + (f":\n{tail(log_path)}" if log_path is not None else "")
