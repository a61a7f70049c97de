"""The ROS-world build: `colcon build` of this tree (ament_cmake + rosidl) with the wheels' colcon, what it
installs (messages, code, launch and config files, node executables, the semla-* tools) and `colcon test`
running the suite through ament_cmake_pytest."""
from __future__ import annotations

import os
import re
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
        [colcon, "build", "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=ON",
         f"-DPython3_EXECUTABLE={sys.executable}", f"-DSEMLA_SHARED_DIR={REPO.parent / 'shared'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    prefix = tmp_path / "install" / "semla_ros"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for rel in ["semla_ros/__init__.py", "semla_ros/msg/__init__.py", "semla_ros/core", "semla_ros/catseg",
                "semla_ros/ros"]:
        assert (site / rel).exists(), rel
    for rel in ["lib/semla_ros/semla_segmenter", "lib/semla_ros/semla_segmenter_managed",
                "lib/semla_ros/semla_demo_camera", "share/semla_ros/package.xml",
                "share/semla_ros/launch/segment.launch.py", "share/semla_ros/launch/demo.launch.py",
                "share/semla_ros/config/semla.yaml", "share/semla_ros/config/semla_official.yaml"]:
        assert (prefix / rel).exists(), rel
    for executable in ("semla_segmenter", "semla_segmenter_managed", "semla_demo_camera"):
        assert os.access(prefix / "lib/semla_ros" / executable, os.X_OK), executable

    # Every semla-* console script of setup.py is an executable in bin/ (on PATH once the workspace is sourced).
    tools = re.findall(r'"(semla-[a-z-]+)=', (REPO / "setup.py").read_text())
    assert len(tools) >= 5
    assert sorted(p.name for p in (prefix / "bin").iterdir()) == sorted(tools)
    for tool in tools:
        assert os.access(prefix / "bin" / tool, os.X_OK), tool

    # The installed copy alone (no source tree on the path) provides code and messages.
    probe = ("import semla_ros, semla_ros.msg as m; "
             "print(semla_ros.__file__); print(m.AdapterFusion().reason == '')")
    env_run = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env_run, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split()
    assert first.startswith(str(site)) and second == "True"

    # An installed tool runs from the install space alone.
    help_text = subprocess.run([sys.executable, str(prefix / "bin" / "semla-library"), "--help"], cwd=tmp_path,
                               env=env_run, capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "usage: semla-library" in help_text.stdout, help_text.stderr

    # `colcon test` runs the suite (here one quick test of it, picked with PYTEST_ADDOPTS) and reports it.
    test_env = dict(env, PYTEST_ADDOPTS="-q -k test_defaults_validate")
    tested = subprocess.run([colcon, "test", "--event-handlers", "console_direct-", "--return-code-on-test-failure"],
                            cwd=tmp_path, env=test_env, capture_output=True, text=True, timeout=600)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    xunit = tmp_path / "build" / "semla_ros" / "test_results" / "semla_ros" / "semla_ros_suite.xunit.xml"
    report = xunit.read_text()
    assert 'failures="0"' in report and 'errors="0"' in report, report
    assert re.search(r'<testcase classname="semla_ros\.test\.test_ros_parameters" name="test_defaults_validate"'
                     r' time="[0-9.]+" />', report), report
