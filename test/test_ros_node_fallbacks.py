"""device:=cuda without a GPU and backend:=tensorrt without TensorRT: the node runs PyTorch on the CPU, says
each fallback in one log line and shows it as a WARN in /diagnostics; at --log-level debug the node's own
per-frame line and the engine's Python `logging` records (here: the checkpoint load) are in its log.
Node in its own process.
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import start_streaming, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_cuda_and_tensorrt_requests_fall_back_with_one_warning_each(tmp_path, probe, run_node, run_camera):
    import torch
    from safetensors.torch import save_file

    from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason
    from semla_ros.catseg.build import build_catseg

    if torch.cuda.is_available() or tensorrt_unavailable_reason() is None:
        pytest.skip("a CUDA GPU (or TensorRT with a GPU) is usable here: the CPU fallback does not apply")
    checkpoint = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in build_catseg("tiny").state_dict().items()}, str(checkpoint))

    params = tiny_node_params(navigator="tower", device="cuda", backend="tensorrt", checkpoint=str(checkpoint),
                              allow_random_weights=False)
    node = run_node(params, ros_args=("--log-level", "debug"))
    start_streaming(probe, node, masks=2, camera=run_camera)
    probe.spin_for(1.5)   # past the per-frame debug line's throttle
    diag = probe.diag()
    assert diag["level"] == 1 and diag["state"] == "running", diag
    assert "running on the CPU" in diag["warn_model_0"] and "TensorRT" in diag["warn_backend_0"], diag
    code, _ = node.stop()
    log = node.log()
    assert code == 0, log
    lines = log.splitlines()
    device_lines = [line for line in lines if "device 'cuda' requested but no CUDA GPU is usable here" in line]
    tensorrt_lines = [line for line in lines if "TensorRT backend requested but" in line]
    assert len(device_lines) == 1 and device_lines[0].startswith("[WARN]"), log
    assert len(tensorrt_lines) == 1 and tensorrt_lines[0].startswith("[WARN]"), log
    assert "running on the CPU" in device_lines[0] and "running the PyTorch backend" in tensorrt_lines[0]
    assert any(line.startswith("[INFO]") and f"semla_ros.catseg.checkpoint: loaded CAT-Seg weights from {checkpoint}"
               in line for line in lines), log
    assert any(line.startswith("[DEBUG]") and "[t.semla_segmenter]: frame " in line and " ms" in line
               for line in lines), log
