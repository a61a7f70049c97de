"""Library-gap detection in the real node: the demo camera (its own process) drives from a domain the
library covers into one it lacks; the node (its own process) publishes `coverage`, turns /diagnostics to
WARN with the reason, and captures a rate-limited, size-bounded sample of the uncovered frames with their
embeddings; `semla-library gaps` then proposes one new entry from them.

Model: the demo-sized CAT-Seg with seeded random weights (fast); library: 'clear' and 'fog' adapters whose
centroids are the node's own navigator embeddings of those domains (no 'night'). Measured with that
navigator, clear frames lie at most ~0.6 x the centroid spacing from the nearest adapter and night frames
at least ~1.3 x, so a 1.0 threshold separates them without depending on timing.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from itertools import pairwise

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from relabel_helpers import CLASSES, build_domain_library, demo_model_config  # noqa: E402
from ros_harness import child_env  # noqa: E402

from semla_ros.ros.processes import demo_camera_command  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
PERIOD_S, MAX_FRAMES = 0.4, 4


def test_a_domain_the_library_lacks_is_flagged_and_captured(tmp_path, probe, run_node, run_process, capsys):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from semla_ros.msg import CoverageStatus

    config = demo_model_config(tmp_path)
    library = tmp_path / "library"
    build_domain_library(library, config, domains=("clear", "fog"))
    capture, frame_log = tmp_path / "capture", tmp_path / "frames.jsonl"
    node = run_node(dict(
        model_config=str(config), checkpoint="", allow_random_weights=True, device="cpu", backend="torch",
        classes=list(CLASSES),
        library_path=str(library), navigator="tower", top_k=2, diagnostics_period_s=0.25,
        coverage_max_relative_distance=1.0, coverage_window=4, coverage_suspect_fraction=0.5,
        coverage_gap_fraction=0.75, coverage_capture_dir=str(capture), coverage_capture_period_s=PERIOD_S,
        coverage_capture_max_frames=MAX_FRAMES))
    statuses = probe.collect(CoverageStatus, "/t/coverage", QoSProfile(depth=200,
                                                                      reliability=ReliabilityPolicy.RELIABLE))
    probe.watch_diagnostics()
    probe.wait_running(node)
    assert probe.diag()["level"] == 0, probe.diag()
    run_process(demo_camera_command("t", sequence="clear:3,night:6", rate_hz=5.0, loop="false",
                                    wait_for_subscribers=1, frame_log=frame_log))
    probe.spin_until(lambda: any(s.status == CoverageStatus.GAP for s in statuses)
                     and probe.diag().get("level") == 1, 90, "a GAP status and a diagnostics WARN")
    frames = 45   # 9 s at 5 Hz; the camera then stays up without publishing
    probe.spin_until(lambda: frame_log.is_file() and len(frame_log.read_text().splitlines()) >= frames, 60,
                     "the camera to play its whole sequence")
    # Waits for what the node reports last (its captures), not for a time: frames still in flight count too.
    probe.spin_until(lambda: statuses[-1].frames_captured == MAX_FRAMES and "capture folder" in " ".join(
        v for k, v in probe.diag().items() if k.startswith("warn_coverage")), 30, "the last capture reported")
    diag = probe.diag()
    # Coverage thresholds are live; an inconsistent combination is refused with the reason.
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, "/t/semla_segmenter/set_parameters")
    probe.spin_until(client.service_is_ready, 10, "the set_parameters service")
    replies = []
    for name, value in (("coverage_suspect_fraction", 0.9), ("coverage_window", 6)):
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value)
                                                                     .to_parameter_msg()]))
        probe.spin_until(future.done, 30, f"the reply to {name}")
        replies.append(future.result().results[0])
    code, _ = node.stop(signal.SIGINT)
    assert code == 0, node.log()
    assert not replies[0].successful and "must not exceed gap_fraction 0.75" in replies[0].reason
    assert replies[1].successful, replies[1].reason

    domain_of = {(r["sec"], r["nanosec"]): r["domain"] for r in map(json.loads, frame_log.read_text().splitlines())}
    seen = [(domain_of[(s.header.stamp.sec, s.header.stamp.nanosec)], s) for s in statuses]
    clear = [s for d, s in seen if d == "clear"]
    night = [s for d, s in seen if d == "night"]
    assert len(clear) >= 5 and len(night) >= 8, (len(clear), len(night))
    assert all(s.status == CoverageStatus.COVERED and s.relative_distance < 1.0 for s in clear)
    assert all(s.relative_distance > 1.0 for s in night)
    assert night[-1].status == CoverageStatus.GAP and night[-1].uncovered_fraction == 1.0
    assert all(math.isclose(s.relative_distance * (s.nearest_distance / s.relative_distance), s.nearest_distance)
               for s in night)
    assert "library gap" in diag["message"] and diag["coverage"] == "gap", diag
    assert "capture folder" in " ".join(v for k, v in diag.items() if k.startswith("warn_coverage"))
    assert night[-1].capture_dir == str(capture) and night[-1].frames_captured == MAX_FRAMES

    # The captured frames: night only, at most one per PERIOD_S, at most MAX_FRAMES, with embeddings.
    names = sorted(p.stem for p in (capture / "images").glob("*.png"))
    assert len(names) == MAX_FRAMES
    stamps = [tuple(int(x) for x in n.split("_")) for n in names]
    assert all(domain_of[s] == "night" for s in stamps)
    seconds = [sec + nsec * 1e-9 for sec, nsec in stamps]
    assert all(b - a >= PERIOD_S - 1e-6 for a, b in pairwise(seconds))
    assert sorted(p.stem for p in (capture / "embeddings").glob("*.npy")) == names
    records = [json.loads(line) for line in (capture / "captures.jsonl").read_text().splitlines()]
    assert [r["name"] for r in records] == names and all(r["status"] != "covered" for r in records)
    assert (capture / "classes.txt").read_text().split("\n")[:len(CLASSES)] == list(CLASSES)

    # `semla-library gaps` turns them into one proposed entry (its own process, like an operator would).
    out = subprocess.run([sys.executable, "-m", "semla_ros.cli.library", "gaps", str(capture), "--library",
                          str(library), "--json", "--out", str(tmp_path / "proposals")],
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    (proposal,) = result["proposals"]
    assert proposal["frames"] == MAX_FRAMES and proposal["mean_relative_distance"] > 1.0
    assert {a["name"] for a in proposal["nearest_adapters"]} == {"demo-clear", "demo-fog"}
    folder = tmp_path / "proposals" / "gap-000"
    assert sorted(p.stem for p in (folder / "images").glob("*.png")) == names
    assert not (folder / "labels").exists()
    assert "add labels" in json.loads((folder / "proposal.json").read_text())["labels"]
    assert os.path.isfile(folder / "classes.txt")
