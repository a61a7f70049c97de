"""`semla-bench onnx` runs end to end (engine backend vs PyTorch, a fusion swapped in) and its parity check can fail."""
from __future__ import annotations

import json

import pytest

from semla_ros.cli.bench import main
from semla_ros.demo.build_assets import demo_config


@pytest.mark.slow
def test_bench_onnx_small_model_passes_and_reports(capsys, tmp_path):
    config = tmp_path / "small.json"   # the demo's small CAT-Seg: same code, seconds instead of minutes
    config.write_text(json.dumps(demo_config().to_dict()))
    common = ["onnx", "--config", str(config), "--classes", "6", "--repeats", "1", "--top-k", "2",
              "--cache-dir", str(tmp_path / "cache")]
    assert main(common + ["--json", str(tmp_path / "figures.json")]) == 0
    out = capsys.readouterr().out
    assert "max |onnxruntime - PyTorch|" in out and "small.json" in out and "swap:" in out
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert [row["served_by"] for row in figures["frames"]] == ["engine", "engine"] and figures["updated"] == 35
    assert all(row["mask_agreement"] > 0.99 for row in figures["frames"])
    # An impossible tolerance turns the same run into a failure: the check is real.
    assert main(common + ["--tolerance", "0"]) == 1
