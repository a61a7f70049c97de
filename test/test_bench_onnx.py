"""`semla-bench onnx` runs end to end and its parity check can fail."""
from __future__ import annotations

from semla_ros.cli.bench import main


def test_bench_onnx_tiny_passes_and_reports(capsys):
    assert main(["onnx", "--config", "tiny", "--classes", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "max |onnxruntime - PyTorch|" in out and "tiny" in out
    # An impossible tolerance turns the same run into a failure: the check is real.
    assert main(["onnx", "--config", "tiny", "--classes", "6", "--repeats", "1", "--tolerance", "0"]) == 1
