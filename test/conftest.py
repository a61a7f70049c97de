"""Shared test fixtures: the official reference fixtures and per-test ROS domains."""
from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# DDS discovery stays on this machine: tests never send traffic beyond loopback.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def shared_dir() -> Path:
    """`../shared` beside the checkout (CI puts it there), or SEMLA_SHARED_DIR."""
    return Path(os.environ.get("SEMLA_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """Fixture A from the official implementation. Missing means a broken checkout: fail."""
    path = Path(os.environ.get("SEMLA_FIXTURES_DIR", shared_dir() / "fixtures")) / "catseg_official_A"
    if not (path / "config.json").is_file():
        pytest.fail(f"reference fixture not found at {path} (expected ../shared/fixtures beside the repo)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = shared_dir() / "reference"
    if not path.is_dir():
        pytest.fail(f"reference facts not found at {path}")
    return path


_domain_ids = itertools.count()


@pytest.fixture
def loradb(tmp_path, fixture_dir) -> Path:
    """A writable copy of fixture A's official loradb."""
    root = tmp_path / "loradb"
    shutil.copytree(fixture_dir / "loradb", root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """A ROS_DOMAIN_ID of this test's own (0..100), inherited by the processes it starts.

    Derived from the pid so that test runs going on at the same time rarely meet.
    """
    domain = (os.getpid() * 7 + next(_domain_ids)) % 100 + 1
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, restored afterwards: on this busy 2-core machine a second
    OpenMP thread spin-waits (measured 6x slower here)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The real-process fixtures (a node with params, the synthetic camera, any process, a probe), stopped after
# each test.
from ros_harness import probe, run_camera, run_node, run_process  # noqa: E402,F401
