"""backend:=onnxruntime in the node (own process): PyTorch serves while the engine builds in the background
(a build that starts once the first mask is out), said once as a WARN in /diagnostics and the log; then the
engine serves, the backend's WARN is gone, and masks keep coming with the input's header and size. The model is
the demo's small CAT-Seg (config JSON), so the export takes seconds."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

from ros_harness import FRAME_SIZE, tiny_node_params  # noqa: E402

pytestmark = pytest.mark.ros   # each test starts the node in its own process


@pytest.mark.slow
def test_node_serves_through_onnxruntime_once_built(tmp_path, probe, run_node, run_camera):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.demo.build_assets import demo_config

    config = tmp_path / "small.json"
    config.write_text(json.dumps(demo_config().to_dict()))
    node = run_node(tiny_node_params(model_config=str(config), navigator="tower", backend="onnxruntime",
                                     engine_cache_dir=str(tmp_path / "cache")))
    masks = probe.collect(Image, "/t/mask", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    probe.watch_diagnostics()
    probe.wait_running(node)
    run_camera("day:0", 5)
    probe.spin_until(lambda: "engine serving" in node.log(), 120, "the onnxruntime engine to serve")
    log = node.log()   # the sessions open once the first mask is out (held builds): PyTorch served it
    assert log.index("class map v1") < log.index("engine serving")
    probe.spin_until(lambda: not any(key.startswith("warn_backend") for key in probe.diag()), 10,
                     "the backend's WARN gone from /diagnostics")
    seen = len(masks)
    probe.spin_until(lambda: len(masks) >= seen + 3, 60, "three masks from the engine")
    code, _ = node.stop()
    assert code == 0, node.log()
    log = node.log()
    assert log.count("onnxruntime engine is being built") <= 1, log    # the fallback said at most once (none if
                                                                        # the engine was ready before the first frame)
    assert "onnxruntime fp32 engine serving" in log
    assert all((m.height, m.width, m.encoding) == (*FRAME_SIZE, "mono8") for m in masks)
