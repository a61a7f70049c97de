"""The ROS-world build: `colcon build` of this tree (ament_cmake + rosidl) with the wheels' colcon."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

pytestmark = pytest.mark.ros


def test_colcon_build_installs_messages_code_launch_and_executables(tmp_path):
    colcon = shutil.which("colcon", path=str(VENV / "bin"))
    assert colcon, "colcon must be installed in the venv (colcon-common-extensions in requirements.txt)"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "semla_ros").symlink_to(REPO)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    build = subprocess.run(
        [colcon, "build", "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    prefix = tmp_path / "install" / "semla_ros"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for rel in ["semla_ros/__init__.py", "semla_ros/msg/__init__.py", "semla_ros/core", "semla_ros/catseg",
                "semla_ros/ros"]:
        assert (site / rel).exists(), rel
    for rel in ["lib/semla_ros/semla_segmenter", "share/semla_ros/package.xml", "share/semla_ros/launch",
                "share/semla_ros/config"]:
        assert (prefix / rel).exists(), rel
    assert os.access(prefix / "lib/semla_ros/semla_segmenter", os.X_OK)

    # The installed copy alone (no source tree on the path) provides code and messages.
    probe = ("import semla_ros, semla_ros.msg as m; "
             "print(semla_ros.__file__); print(m.AdapterFusion().reason == '')")
    env_run = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env_run, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split()
    assert first.startswith(str(site)) and second == "True"
