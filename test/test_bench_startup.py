"""`semla-bench node --startup`: the benchmark runs the real node process on the tiny random-weights model (the
demo assets are never built here) and prints each start and the median; the figures themselves are not checked
(speed is the benchmark's business, not a test's)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from ros_harness import child_env

from semla_ros.bench.startup import first_stamp, log_events


def test_node_log_lines_give_stamps_and_messages():
    text = ("[INFO] [1796667804.504690187] [startup.semla_segmenter]: lifecycle: configure (from unconfigured)\n"
            "/x.py:61: TracerWarning: not a log line\n"
            "[WARN] [1796667820.776202434] [startup.semla_segmenter]: segmenter ready (device: cpu)\n")
    events = log_events(text)
    assert [message for _, message in events] == ["lifecycle: configure (from unconfigured)",
                                                  "segmenter ready (device: cpu)"]
    assert first_stamp(events) == pytest.approx(1796667804.504690187)
    assert first_stamp(events, "segmenter ready") == pytest.approx(1796667820.776202434)
    assert first_stamp(events, "engine serving") is None


@pytest.mark.ros
@pytest.mark.slow
def test_startup_bench_measures_a_real_node_start(ros_domain_id):
    done = subprocess.run([sys.executable, "-m", "semla_ros.cli.bench", "node", "--startup", "--model", "tiny",
                           "--runs", "1", "--backends", "torch"], env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    number = r"\s+(\d+\.\d\d)"
    run = re.search(r"^torch\s+1" + number * 3 + r"\s+PyTorch$", done.stdout, re.MULTILINE)
    median = re.search(r"^torch\s+med" + number * 3 + r"\s+\(1 runs", done.stdout, re.MULTILINE)
    assert run and median, done.stdout
    first_log, ready, mask = (float(v) for v in run.groups())
    assert 0 < first_log <= ready <= mask   # the milestones of one start, in order
    assert [float(v) for v in median.groups()] == [first_log, ready, mask]
