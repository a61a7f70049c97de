"""`semla-bench library` runs end to end on small libraries (tiny config) and reports what it measures."""
import re

import pytest

from semla_ros.bench.library import main


@pytest.mark.slow
def test_bench_library_runs_and_the_index_matches_the_full_pass(tmp_path, capsys):
    assert main(["--config", "tiny", "--sizes", "12", "--eager-sizes", "4", "--pool", "3", "--queries", "8",
                 "--exact-queries", "8", "--swaps", "1", "--threads", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "64 target modules, r=8" in out and "3 distinct adapter files" in out
    rows = {m.group(1): m.group(0).split() for m in re.finditer(r"^(eager|lazy)\s+\d+ .*$", out, re.M)}
    assert set(rows) == {"eager", "lazy"}
    assert rows["lazy"][1] == "12" and rows["eager"][1] == "4" and rows["lazy"][8] == rows["eager"][8] == "yes"
    assert float(rows["lazy"][9]) > 0 and float(rows["eager"][9]) > 0       # the decision per embedding was timed
    assert float(rows["lazy"][10]) > 0 and float(rows["lazy"][12]) > 0      # cold and warm swaps were timed
    assert rows["eager"][10] == "-"                                            # nothing is cold when all is read
    assert len(list((tmp_path / "store").glob("d*"))) == 12 and len(list((tmp_path / "pool").iterdir())) == 3
