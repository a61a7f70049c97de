"""Helpers for the node's process-level tests: start the node in its own process, listen to it
from this process, and build a small adapter library whose centroids are real navigator
embeddings of the synthetic camera's domains.

Not a test module (no test_ prefix); imported by test_ros_node_*.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
FRAME_SIZE = (96, 128)  # (H, W) of the synthetic frames in these tests
TEST_CLASSES = ["road", "sky", "building", "car"]


def child_env() -> dict:
    """The environment for child processes: this test's ROS_DOMAIN_ID, loopback discovery, repo on path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_camera(schedule: str, rate: float, *options: str, capture: bool = False) -> subprocess.Popen:
    """The synthetic camera process publishing FRAME_SIZE frames on /t/image."""
    command = [sys.executable, "-m", "semla_ros.ros.synthetic_camera", "--schedule", schedule, "--rate", str(rate),
               "--size", f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}", "--topic", "/t/image", *options]
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(command, env=child_env(), stdout=out, stderr=subprocess.STDOUT, text=True)


class NodeProcess:
    """`python -m semla_ros.ros.node` with a params file, in namespace /<namespace>."""

    def __init__(self, tmp_path: Path, params: dict, namespace: str = "t"):
        self.namespace = namespace
        self.params_file = tmp_path / "params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp_path / "node.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semla_ros.ros.node", "--ros-args", "--params-file", str(self.params_file),
             "-r", f"__ns:=/{namespace}"],
            stdout=self._log, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`; return (exit code, seconds until the process was gone)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code, time.monotonic() - start


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
    """Adapters whose centroids are TowerNavigator embeddings of the synthetic domains.

    The tiny model is built exactly as the node builds it (torch.manual_seed(random_seed), then
    build_catseg("tiny")), so the tower, its id and its embeddings are the node's. Each domain gets
    `per_domain` adapters: centroid = the domain's embedding + a small offset; random LoRA factors
    on every SemLA target. Returns the domain embeddings and their distance.
    """
    import torch

    from semla_ros.catseg.build import build_catseg
    from semla_ros.core.library import write_entry
    from semla_ros.core.navigator import TowerNavigator
    from semla_ros.core.targets import semla_target_modules
    from semla_ros.ros.synthetic_camera import FrameSource

    torch.manual_seed(random_seed)
    model = build_catseg("tiny").eval()
    navigator = TowerNavigator(model)
    source = FrameSource(*FRAME_SIZE, noise=0)
    embeddings = {d: navigator.embed([source.frame(d, 0)])[0].astype(np.float64) for d in domains}
    distance = float(np.linalg.norm(embeddings[domains[0]] - embeddings[domains[1]]))
    generator = torch.Generator().manual_seed(1234)
    rng = np.random.default_rng(1234)
    targets = semla_target_modules(model)
    for domain in domains:
        for i in range(per_domain):
            factors = {}
            for name in targets:
                linear = model.get_submodule(name)
                a = torch.randn(rank, linear.in_features, generator=generator) * 0.02
                b = torch.randn(linear.out_features, rank, generator=generator) * 0.02
                factors[name] = (a, b)
            offset = rng.normal(size=embeddings[domain].shape)
            centroid = embeddings[domain] + 0.03 * distance * offset / np.linalg.norm(offset)
            write_entry(root, f"{domain}-{i}", factors, centroid, lora_alpha=2 * rank,
                        metadata={"navigator": navigator.id, "embedding_dim": navigator.dim,
                                  "description": f"synthetic {domain} test adapter"})
    return {"embeddings": embeddings, "distance": distance, "navigator_id": navigator.id}


def tiny_node_params(**overrides) -> dict:
    """Node parameters for the tiny model with seeded random weights."""
    params = dict(model_config="tiny", checkpoint="", allow_random_weights=True, random_seed=0,
                  device="cpu", classes=TEST_CLASSES, diagnostics_period_s=0.25)
    params.update(overrides)
    return params
