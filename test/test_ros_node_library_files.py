"""The node with an adapter library an operator breaks (issue 15, library files): a FIFO and a directory in
place of entry files at startup, then every adapter file truncated under the running node. The node stays
up, good frames keep their masks, each bad entry is named in the log and /diagnostics, a fusion with
nothing usable fails and leaves the active fusion in place, and a reload of the broken library is refused.
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import build_test_library, call_trigger, tiny_node_params  # noqa: E402

pytestmark = pytest.mark.ros   # each test starts the node in its own process


def _diagnostics_text(probe) -> str:
    return " | ".join(f"{k}={v}" for k, v in probe.diag().items())


@pytest.mark.slow
def test_node_survives_a_broken_library(tmp_path, probe, run_node, run_camera):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.msg import AdapterFusion
    from semla_ros.ros.node import FUSION_QOS

    library = tmp_path / "library"
    build_test_library(library)
    os.unlink(library / "night-1" / "adapter_config.json")
    os.mkfifo(library / "night-1" / "adapter_config.json")        # a blocking read would hang the node
    os.unlink(library / "day-1" / "metadata.json")
    os.mkdir(library / "day-1" / "metadata.json")
    # nothing cached: every fusion reads its adapters from disk
    node = run_node(tiny_node_params(navigator="tower", library_path=str(library),
                                     adapter_cache_mb=0.0))
    masks = probe.collect(Image, "/t/mask", QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    fusions = probe.collect(AdapterFusion, "/t/fusion", FUSION_QOS)
    probe.watch_diagnostics()
    probe.wait_running(node)
    text = _diagnostics_text(probe)
    assert probe.diag()["level"] == 1 and "night-1" in text and "FIFO" in text, text
    assert "day-1" in text and "metadata.json is a directory" in text, text
    run_camera("day:0", 5)
    probe.spin_until(lambda: fusions and len(masks) >= 2, 90, "the startup fusion and masks")
    active = list(fusions[-1].adapter_names)
    assert set(active) <= {"day-0", "night-0"} and fusions[-1].reason == AdapterFusion.REASON_STARTUP

    for name in ("day-0", "night-0"):      # an operator's copy truncates the files under the node
        path = library / name / "adapter_model.safetensors"
        os.truncate(path, os.path.getsize(path) // 3)
    reply = call_trigger(probe, "/t/semla_segmenter/adapt_now")
    assert reply.success, reply.message
    probe.spin_until(lambda: "changed on disk" in _diagnostics_text(probe), 60,
                     "the truncated adapters named in /diagnostics")
    reply = call_trigger(probe, "/t/semla_segmenter/reload_library")
    assert not reply.success and "previous library kept" in reply.message and "unreadable" in reply.message
    seen = len(masks)
    probe.spin_until(lambda: len(masks) >= seen + 3, 60, "masks after the library broke")
    assert node.proc.poll() is None, node.log()
    assert len(fusions) == 1 and list(fusions[-1].adapter_names) == active    # the active fusion stays
    assert probe.diag()["active_adapters"].startswith(active[0])
    code, _ = node.stop()
    assert code == 0, node.log()
    log = node.log()
    assert "adaptation (manual) failed, previous model stays active" in log and "no usable adapter" in log
    for name in ("day-0", "night-0"):
        assert sum(f"adapter {name} skipped until the library is reloaded" in line for line in log.splitlines()) == 1
