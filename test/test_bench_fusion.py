"""`semla-bench fusion` runs end to end (tiny config) and its fused model equals PEFT's merged adapter."""
import re

import pytest

from semla_ros.bench.fusion import main


@pytest.mark.slow
def test_bench_fusion_runs_and_matches_peft(capsys):
    assert main(["--config", "tiny", "--top-k", "2", "--swap-reps", "1", "--frame-reps", "1", "--classes", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("swap   ours", "swap   PEFT", "bound  copy", "frame  ours", "frame  PEFT", "PEFT / ours"):
        assert label in out
    assert "64 target modules" in out
    diff = float(re.search(r"max \|logits ours - logits PEFT\|\s+(\S+)", out).group(1))
    assert diff < 1e-4
