"""The node in its own process, fed by the synthetic camera in another, with one domain change.

What is asserted (tiny model, seeded random weights, 4-adapter library built from real navigator
embeddings of the two domains):
- every mask has the header (stamp + frame_id) of a frame the camera published, the input's size,
  and encoding mono8; no frame gets two masks; masks == support scores == frames_processed;
- a support score per processed frame, with the same header as its mask, finite once embedded, with the
  scale-free and active-fusion supports and the top-1 adapter;
- fusion messages: exactly two over the whole run: the startup fusion (made on a 'day' frame,
  day adapters on top) and one 'shift' fusion made on a 'night' frame (night adapters on top).
  None in the stationary day stretch (>= 3 processed day frames after the startup swap) and none
  in the night frames after the shift;
- SIGINT ends the node with exit code 0 (the time is printed; the < 2 s figure is in the bench).
The thresholds make this deterministic: frames of one domain differ only by +-4 grey levels, the
domains are a full inter-centroid distance d apart, the threshold is 0.3 d (relative mode), EMA
alpha 0.8 and 2 consecutive frames; the re-anchored reference after the shift sits within 0.1 d of
the night embedding.
"""
from __future__ import annotations

import math
import signal

import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from ros_harness import FRAME_SIZE, build_test_library, tiny_node_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]   # each test starts the node in its own process

STATIONARY_FRAMES = 3   # processed day frames after the startup swap (+1 for the swap frame itself)
FRAMES_AFTER_SHIFT = 2  # processed night frames after the shift swap


def _key(header):
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def test_stream_with_domain_change(tmp_path, probe, run_node, run_camera):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from semla_ros.msg import AdapterFusion, SupportScore
    from semla_ros.ros.node import FUSION_QOS

    library = tmp_path / "library"
    built = build_test_library(library)
    assert built["distance"] > 0
    node = run_node(tiny_node_params(
        navigator="tower", library_path=str(library), threshold_mode="relative", switch_threshold=0.3,
        ema_alpha=0.8, min_consecutive=2, cooldown_s=0.0, embed_every_n=1, warmup_frames=1, top_k=2,
        temperature=0.05, trigger="distance", dwell_s=0.0))
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    images = probe.collect(Image, "/t/image", reliable)
    masks = probe.collect(Image, "/t/mask", reliable)
    scores = probe.collect(SupportScore, "/t/support_score", reliable)
    fusions = probe.collect(AdapterFusion, "/t/fusion", FUSION_QOS)
    probe.watch_diagnostics()
    probe.wait_running(node)
    assert probe.diag()["level"] == 0, probe.diag()  # OK: model, navigator and library all loaded

    camera = run_camera("day:0,night:0", 10, "--frame-id", "cam_{domain}", "--reliable",
                          "--min-subscribers", "2", "--wait-subscribers", "30",  # the node and this probe
                          capture=True)

    def day_masks_after_startup():
        if not fusions:
            return 0
        startup = _key(fusions[0].header)
        keys = [_key(m.header) for m in masks]
        return sum(1 for k in keys if k > startup and k[2] == "cam_day")

    probe.spin_until(lambda: day_masks_after_startup() >= STATIONARY_FRAMES + 1, 120,
                     f"the startup fusion and {STATIONARY_FRAMES + 1} day masks after its frame")
    assert len(fusions) == 1, "a fusion happened in the stationary stretch"
    camera.send_signal(signal.SIGUSR1)  # day -> night

    def night_masks_after_shift():
        if len(fusions) < 2:
            return 0
        shift = _key(fusions[1].header)
        return sum(1 for m in masks if _key(m.header) > shift and m.header.frame_id == "cam_night")

    probe.spin_until(lambda: night_masks_after_shift() >= FRAMES_AFTER_SHIFT, 120,
                     f"the shift fusion and {FRAMES_AFTER_SHIFT} more night masks")
    camera.send_signal(signal.SIGINT)
    camera.wait(10)
    # The node publishes a frame's mask, then its score, then counts it; the two topics are received in any
    # order. Once one diagnostics message's count equals both lists, they hold exactly the frames it counted;
    # the probe does not spin after this, so nothing arrives on one list without the other.
    probe.spin_until(lambda: probe.diag().get("frames_processed") == str(len(masks)) == str(len(scores)),
                     30, "diagnostics, masks and scores to agree")
    code, seconds = node.stop(signal.SIGINT)
    print(f"node exit code {code} after SIGINT in {seconds:.2f} s; {len(images)} frames published, "
          f"{len(masks)} processed, fusions {[f.reason for f in fusions]}")
    assert code == 0, node.log()

    # One mask per processed frame, each carrying its input's header, size and a valid encoding.
    published = {_key(m.header): m for m in images}
    mask_keys = [_key(m.header) for m in masks]
    assert len(set(mask_keys)) == len(mask_keys), "a frame got two masks"
    assert set(mask_keys) <= set(published), "a mask carries a header that no input frame had"
    for mask in masks:
        source = published[_key(mask.header)]
        assert (mask.height, mask.width) == (source.height, source.width) == FRAME_SIZE
        assert mask.encoding == "mono8" and mask.step * mask.height == len(mask.data)
        assert max(mask.data) < 4  # 4 classes
    diag = probe.diag()
    assert int(diag["frames_processed"]) == len(masks) == len(scores)
    assert int(diag["frames_bad"]) == 0

    # A support score per processed frame with the same header; finite once frames are embedded (the
    # navigator runs beside segmentation: an embedding reaches the debouncer on a frame after its own).
    assert [_key(s.header) for s in scores] == mask_keys
    first = next(i for i, s in enumerate(scores) if s.embedded_this_frame)
    # The two fusions needed warmup_frames (1) embeddings and min_consecutive (2) night ones. How many more
    # frames were embedded depends on the cadence backing off at rest (embed_rest_every_n, default 4) and on
    # how many day frames the node segmented before the switch: timing, so not asserted (it once read 7 of 16).
    assert sum(s.embedded_this_frame for s in scores) >= 1 + 2
    assert all(math.isfinite(s.support_score) and s.support_score > 0 for s in scores[first:])
    assert all(s.top_adapter and math.isfinite(s.scale_free_support) for s in scores[first:])
    assert scores[-1].top_adapter.startswith("night-")
    assert math.isfinite(scores[-1].active_support) and math.isfinite(scores[-1].active_scale_free_support)
    assert all(math.isclose(s.switch_threshold, scores[0].switch_threshold) for s in scores)
    assert scores[-1].active_adapters == 2

    # Exactly two fusions: startup on a day frame, one shift on a night frame.
    assert [f.reason for f in fusions] == [AdapterFusion.REASON_STARTUP, AdapterFusion.REASON_SHIFT]
    startup, shift = fusions
    assert startup.header.frame_id == "cam_day" and shift.header.frame_id == "cam_night"
    assert [f.swap_count for f in fusions] == [1, 2]
    assert all(name.startswith("day-") for name in startup.adapter_names)
    assert all(name.startswith("night-") for name in shift.adapter_names)
    # The last frame's top-1 is in the running fusion. Not necessarily its heaviest adapter
    # (active_is_top): night-0 and night-1 both sit 0.03 d from the night embedding, so which of the two
    # ranks first depends on the camera's +-4 grey-level jitter (CI saw night-1 top, night-0 heaviest).
    assert scores[-1].top_adapter in shift.adapter_names
    assert scores[-1].active_is_top == (scores[-1].top_adapter == shift.adapter_names[0])
    for fusion in fusions:
        assert len(fusion.adapter_names) == len(fusion.weights) == len(fusion.distances) == 2
        assert math.isclose(sum(fusion.weights), 1.0, rel_tol=1e-5)
        assert fusion.fusion_ms > 0
    assert int(diag["swaps"]) == 2 and int(diag["failed_fusions"]) == 0
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms_mean", "model_ms_mean", "frames_dropped_stale",
                "frames_bad", "support", "active_adapters"):
        assert key in diag, key
    assert diag["active_adapters"].startswith("night-")
