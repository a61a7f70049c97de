"""The embedding cadence: dense while the decision moves, backing off to embed_rest_every_n while it is still."""
import pytest
from test_core_segmenter import frame, library, make_segmenter, tiny_targets  # noqa: F401  (fixtures)

from semla_ros.core.embedding_cadence import EmbeddingCadence


def test_the_interval_doubles_while_still_and_is_dense_again_when_the_decision_moves():
    cadence = EmbeddingCadence()
    seen = []
    for moving in [False] * 4 + [True, False]:
        seen.append(cadence.interval(1, 4))
        cadence.settle(moving)
    seen.append(cadence.interval(1, 4))
    assert seen == [1, 2, 4, 4, 4, 1, 2]
    cadence.reset()
    assert cadence.interval(2, 8) == 2
    for _ in range(4):
        cadence.settle(False)
    assert cadence.interval(3, 10) == 10 and cadence.interval(3, 100) == 48   # 3 doubled four times, capped
    assert cadence.interval(5, 1) == 5 and cadence.interval(5, 5) == 5       # rest <= every_n: fixed cadence


def _embedded(seg, domains):
    """Indices of the frames whose embedding reached the decision, and the fusions (index, reason, top-1)."""
    embedded, fusions = [], []
    for i, d in enumerate(domains):
        out = seg.process(frame(d, i), stamp=i)
        if out.embedded:
            embedded.append(i)
        if out.fusion is not None:
            fusions.append((i, out.fusion.reason, out.fusion.adapters[0]))
    return embedded, fusions


@pytest.mark.slow
def test_at_rest_the_navigator_backs_off_and_a_change_brings_every_frame_back(library):  # noqa: F811
    seg = make_segmenter(library, trigger="evidence", embed_rest_every_n=4)
    embedded, fusions = _embedded(seg, ["red"] * 20 + ["blue"] * 12)
    seg.close()
    # Startup (frame 0) then still: 1, 2, 4, 4, ... frames apart.
    assert embedded[:6] == [0, 1, 3, 7, 11, 15]
    gaps = [b - a for a, b in zip(embedded, embedded[1:], strict=False)]
    assert max(gaps) == 4
    # The change at frame 20 is embedded at most 4 frames late, then every frame until the swap to blue.
    first_blue = next(i for i in embedded if i >= 20)
    assert first_blue - 20 < 4
    shift = next(i for i, reason, top in fusions if reason == "shift")
    assert [(reason, top) for _, reason, top in fusions] == [("startup", "red"), ("shift", "blue")]
    assert [i for i in embedded if first_blue <= i <= shift] == list(range(first_blue, shift + 1))
    # After the swap the decision is still again: the interval backs off anew.
    after = [i for i in embedded if i > shift]
    assert after[:3] == [shift + 1, shift + 3, shift + 7][:len(after[:3])]


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"trigger": "evidence", "embed_rest_every_n": 1},
                                      {"trigger": "frame", "embed_rest_every_n": 8}],
                         ids=["rest cadence off", "per-image SemLA"])
def test_every_frame_is_embedded_where_the_cadence_must_not_back_off(library, settings):  # noqa: F811
    seg = make_segmenter(library, **settings)
    embedded, _ = _embedded(seg, ["red"] * 12)
    seg.close()
    assert embedded == list(range(12))


@pytest.mark.slow
def test_a_live_change_of_the_rest_cadence_applies_to_the_next_frame(library):  # noqa: F811
    seg = make_segmenter(library, trigger="evidence", embed_rest_every_n=8)
    embedded, _ = _embedded(seg, ["red"] * 16)
    assert embedded == [0, 1, 3, 7, 15]
    seg.update_settings(embed_rest_every_n=1)
    more = [i for i in range(16, 20) if seg.process(frame("red", i), stamp=i).embedded]
    seg.close()
    assert more == [16, 17, 18, 19]


@pytest.mark.slow
def test_embedding_densely_on_request_keeps_every_frame_and_backs_off_after(library):  # noqa: F811
    """What the coverage monitor asks while its window holds an uncovered frame."""
    seg = make_segmenter(library, trigger="evidence", embed_rest_every_n=4)
    seg.embed_densely(True)
    dense, _ = _embedded(seg, ["red"] * 8)
    seg.embed_densely(False)
    after = [i for i in range(8, 20) if seg.process(frame("red", i), stamp=i).embedded]
    seg.close()
    assert dense == list(range(8))
    assert after == [8, 10, 14, 18]   # still again: 2, 4, 4 frames apart
