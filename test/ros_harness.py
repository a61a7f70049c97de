"""Helpers for the node's process-level tests: start the node in its own process, listen to it
from this process, and build a small adapter library whose centroids are real navigator
embeddings of the synthetic camera's domains.

The fixtures at the end (`probe`, `run_node`, `run_camera`, `run_process`; conftest.py makes them available) start
these and always stop them, so a test needs no try/finally. Starting, signalling and stopping the
processes is semla_ros.ros.processes, as for `semla-demo` and `semla-bench node`.

Not a test module (no test_ prefix); imported by test_ros_node_*.py and conftest.py.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from semla_ros.ros import processes

REPO = processes.REPO
FRAME_SIZE = (96, 128)  # (H, W) of the synthetic frames in these tests
TEST_CLASSES = ["road", "sky", "building", "car"]
HOLD_LOAD_ENV = processes.HOLD_LOAD_ENV


def child_env(**extra: str) -> dict:
    """The environment for child processes: this test's ROS_DOMAIN_ID, loopback discovery, repo on path."""
    return processes.child_env(**extra)


def camera_command(schedule: str, rate: float, *options: str) -> list[str]:
    """The synthetic camera publishing FRAME_SIZE frames on /t/image."""
    return processes.synthetic_camera_command(schedule, rate, f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}", "/t/image",
                                              *options)


def start_camera(schedule: str, rate: float, *options: str, capture: bool = False) -> subprocess.Popen:
    """The synthetic camera process publishing FRAME_SIZE frames on /t/image."""
    return processes.start(camera_command(schedule, rate, *options), capture=capture)


class NodeProcess:
    """`python -m semla_ros.ros.node` with a params file, in namespace /<namespace>.

    `env`: extra environment variables for the node (e.g. HOLD_LOAD_ENV)."""

    def __init__(self, tmp_path: Path, params: dict, namespace: str = "t", ros_args: tuple[str, ...] = (),
                 name: str = "node", env: dict | None = None):
        self.namespace = namespace
        self.params_file = tmp_path / f"{name}_params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp_path / f"{name}.log"
        self.exit_code: int | None = None   # set by stop()
        self.proc = processes.start(processes.node_command(self.params_file, namespace, *ros_args), self.log_path,
                                    env=child_env(**(env or {})), cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`; return (exit code, seconds until the process was gone)."""
        self.exit_code, seconds = processes.stop(self.proc, sig, timeout)
        return self.exit_code, seconds


class Probe:
    """A test-side rclpy node in its own context (this test's ROS_DOMAIN_ID)."""

    def __init__(self, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics: list = []

    def collect(self, msg_type, topic: str, qos=10) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def watch_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def diag(self) -> dict[str, str]:
        """Key/values (plus 'level', 'message') of the newest diagnostics status, {} before any."""
        if not self.diagnostics:
            return {}
        status = self.diagnostics[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        values.update(level=int.from_bytes(status.level, "little") if isinstance(status.level, bytes)
                      else int(status.level), message=status.message)
        return values

    def spin_until(self, predicate, timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def wait_running(self, node: NodeProcess, timeout: float = 90.0) -> None:
        def running():
            if node.proc.poll() is not None:
                raise AssertionError(f"node exited with {node.proc.returncode}:\n{node.log()}")
            return self.diag().get("state") == "running"

        self.spin_until(running, timeout, "the node to report state 'running' in /diagnostics")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def call_trigger(probe: Probe, name: str, timeout: float = 60.0):
    """Call a std_srvs/Trigger service of the node and return its reply."""
    from std_srvs.srv import Trigger

    client = probe.node.create_client(Trigger, name)
    probe.spin_until(client.service_is_ready, 10, f"service {name}")
    future = client.call_async(Trigger.Request())
    probe.spin_until(future.done, timeout, f"a reply from {name}")
    return future.result()


def build_test_library(root: Path, random_seed: int = 0, per_domain: int = 2, rank: int = 4,
                       domains=("day", "night")) -> dict:
    """Adapters whose centroids are TowerNavigator embeddings of the synthetic domains at FRAME_SIZE
    (see semla_ros.ros.synthetic_library). Returns the domain embeddings and their distance."""
    from semla_ros.ros.synthetic_library import build_synthetic_library

    return build_synthetic_library(root, FRAME_SIZE, random_seed=random_seed, per_domain=per_domain, rank=rank,
                                   domains=domains)


def tiny_node_params(**overrides) -> dict:
    """Node parameters for the tiny model with seeded random weights."""
    params = dict(model_config="tiny", checkpoint="", allow_random_weights=True, random_seed=0,
                  device="cpu", backend="torch", classes=TEST_CLASSES, diagnostics_period_s=0.25)
    params.update(overrides)
    return params


def start_streaming(probe: Probe, node: NodeProcess, masks: int = 1,
                    camera=start_camera) -> tuple[list, subprocess.Popen]:
    """Wait for the node to run, start the synthetic camera (day, 5 Hz) and wait for `masks` masks on /t/mask.

    Returns (the growing list of masks, the camera process); diagnostics are watched too. `camera`
    starts it (the run_camera fixture: stopped after the test).
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    received = probe.collect(Image, f"/{node.namespace}/mask", QoSProfile(depth=20,
                                                                           reliability=ReliabilityPolicy.RELIABLE))
    probe.watch_diagnostics()
    probe.wait_running(node)
    process = camera("day:0", 5)
    probe.spin_until(lambda: len(received) >= masks, 60, f"{masks} mask(s) from the node")
    return received, process


def stop_all(probe: Probe, node: NodeProcess, *cameras) -> int:
    """Terminate the helper processes (cameras), stop the node, close the probe; return the node's exit code."""
    for process in cameras:
        processes.stop(process, signal.SIGTERM)
    code, _ = node.stop()
    probe.close()
    return code


def png_bytes(width: int, height: int, with_pixels: bool) -> bytes:
    """An 8-bit grey PNG of zeros; without pixels only its header (IHDR, empty IDAT, IEND): 57 bytes.

    Compressed image "bombs" for the fault tests: 16384x16384 zeros compress to ~260 kB. The pixel
    data is compressed row block by row block, so the test never holds the raw image.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = b""
    if with_pixels:
        compressor, row = zlib.compressobj(9), b"\x00" * (width + 1)
        idat = b"".join([compressor.compress(row * min(256, height - top)) for top in range(0, height, 256)]
                        + [compressor.flush()])
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def probe(ros_domain_id) -> Probe:
    """A Probe on this test's ROS_DOMAIN_ID, closed after the test."""
    probe = Probe()
    yield probe
    probe.close()


@pytest.fixture
def run_node(tmp_path, ros_domain_id):
    """Start a node: `run_node(params, **NodeProcess options)` -> NodeProcess.

    Every node is stopped after the test with SIGINT; one the test did not stop itself must then exit 0
    (a test that stops a node checks the exit code it expects)."""
    started: list[NodeProcess] = []

    def start(params: dict, **options) -> NodeProcess:
        node = NodeProcess(tmp_path, params, **options)
        started.append(node)
        return node

    yield start
    unclean = []
    for node in started:
        if node.exit_code is None:
            code, _ = node.stop()
            if code != 0:
                unclean.append(f"node {node.log_path.name} exited with {code} on SIGINT:\n{node.log()[-4000:]}")
    if unclean:
        pytest.fail("\n".join(unclean))


@pytest.fixture
def run_process(ros_domain_id):
    """Start any process: `run_process(command, log_path=None, capture=False)` -> Popen (processes.start),
    terminated after the test."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], log_path: Path | None = None, capture: bool = False) -> subprocess.Popen:
        started.append(processes.start(command, log_path, capture=capture))
        return started[-1]

    yield start
    for process in started:
        processes.stop(process, signal.SIGTERM)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def run_camera(run_process):
    """Start the synthetic camera: `run_camera(schedule, rate, *options, capture=False)` -> Popen,
    terminated after the test."""

    def start(schedule: str, rate: float, *options: str, capture: bool = False) -> subprocess.Popen:
        return run_process(camera_command(schedule, rate, *options), capture=capture)

    return start
