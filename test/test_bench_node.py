"""`semla-bench node --cycle`: the matching of swaps to the camera's domain changes (pure function;
the benchmark itself runs the node for minutes and is not a test)."""
from semla_ros.bench.node import swaps_at_changes


def test_each_change_is_matched_to_the_first_swap_to_its_domain():
    masks = [(0, "day"), (1, "day"), (2, "night"), (3, "night"), (4, "night"), (5, "fog"), (6, "fog"), (7, "day")]
    fusions = [(0.5, "startup", "day", ("day-0", "day-1")),
               (2.5, "reload", "night", ("day-0", "night-0")),    # half-way: not the new domain's adapters
               (3.5, "shift", "night", ("night-0", "night-1")),
               (4.5, "shift", "night", ("night-1", "night-0")),   # a second swap inside the night stretch
               (7.5, "shift", "day", ("day-1",))]
    changes, unexpected = swaps_at_changes(masks, fusions)
    assert [(t, d, r) for t, d, _, r in changes] == [(2, "night", "shift"), (5, "fog", None), (7, "day", "shift")]
    assert changes[0][2] == 1.5 and changes[1][2] is None and changes[2][2] == 0.5
    assert unexpected == [fusions[3]]


def test_no_masks_no_changes():
    assert swaps_at_changes([], [(1.0, "startup", "day", ("day-0",))]) == ([], [])
