"""Retrieval, weights and support score against the official SemLA formulas and fixture A."""
import numpy as np
import pytest

from semla_ros.core.library import AdapterLibrary
from semla_ros.core.retrieval import distances, retrieve, softmax_weights, support_score


def official_weights(query, centroids, k, temperature):
    """SemLA's formulas as written: s = 1/||q-c||, sorted descending, exp(s/T)/sum, no max-subtraction."""
    sims = {i: 1.0 / np.linalg.norm(query.astype(np.float64) - c.astype(np.float64)) for i, c in enumerate(centroids)}
    top = sorted(sims.items(), key=lambda kv: kv[1], reverse=True)[:k]
    z = np.array([np.exp(s / temperature) for _, s in top])
    return [i for i, _ in top], z / z.sum()


def test_fixture_weights_match_official_and_recorded(fixture_dir):
    expected = np.load(fixture_dir / "fusion_expected.npz")
    lib = AdapterLibrary.open(fixture_dir / "loradb", navigator_dim=768)
    query = expected["query_embedding"]
    r = retrieve(query, lib.centroids, top_k=2, temperature=0.05)
    assert [lib.names[i] for i in r.indices] == list(expected["semla_adapters"])
    np.testing.assert_allclose(r.weights, expected["semla_weights"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.similarities, expected["semla_similarities"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances(query, lib.centroids), expected["source_distances"], atol=1e-9)
    idx, w = official_weights(query[0], lib.centroids, 2, 0.05)
    assert idx == list(r.indices)
    np.testing.assert_allclose(r.weights, w, rtol=1e-13, atol=0)


def test_max_subtraction_equals_official_formula_on_random_libraries():
    rng = np.random.default_rng(0)
    for k in (1, 3, 5, 7):
        c = rng.normal(size=(9, 16)) * 3
        q = rng.normal(size=16) * 3
        r = retrieve(q, c, top_k=k, temperature=0.05)
        idx, w = official_weights(q, c, k, 0.05)
        assert list(r.indices) == idx
        np.testing.assert_allclose(r.weights, w, rtol=1e-12)
        assert r.weights.sum() == pytest.approx(1.0, abs=1e-15)
        assert np.all(np.diff(r.similarities) <= 0)


def test_tiny_distances_do_not_overflow_where_the_official_formula_does():
    c = np.array([[0.0, 0.0], [1e-3, 0.0], [5.0, 5.0]])
    q = np.array([2e-3, 0.0])
    with np.errstate(over="ignore", invalid="ignore"):
        _, official = official_weights(q, c, 3, 0.05)
    assert not np.all(np.isfinite(official))      # exp(1000/0.05) overflows officially
    r = retrieve(q, c, top_k=3, temperature=0.05)
    assert np.all(np.isfinite(r.weights)) and r.weights[0] == pytest.approx(1.0)
    exact = retrieve(c[2], c, top_k=2, temperature=0.05)   # exact match: s = inf takes all
    assert exact.indices[0] == 2 and list(exact.weights) == [1.0, 0.0]
    assert support_score(exact.weights, exact.distances) == np.inf


def test_support_score_is_eq15():
    w = np.array([0.7, 0.3])
    d = np.array([2.0, 4.0])
    assert support_score(w, d) == pytest.approx(0.7 / 2 + 0.3 / 4)
    rng = np.random.default_rng(1)
    c = rng.normal(size=(6, 8))
    q = rng.normal(size=8)
    r = retrieve(q, c, top_k=3, temperature=0.1)
    assert r.support == pytest.approx(np.sum(r.weights / np.linalg.norm(c[r.indices] - q, axis=1)))


def test_cosine_metric_and_top_k_larger_than_library():
    c = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]])
    q = np.array([2.0, 0.2])
    d = distances(q, c, "cosine")
    np.testing.assert_allclose(d, 1 - (c @ q) / (np.linalg.norm(c, axis=1) * np.linalg.norm(q)))
    r = retrieve(q, c, top_k=10, temperature=0.05, metric="cosine")
    assert list(r.indices) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=0), "top_k"), (dict(temperature=0.0), "temperature"), (dict(metric="manhattan"), "metric")])
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(top_k=2, temperature=0.05, metric="euclidean") | kwargs
    with pytest.raises(ValueError, match=match):
        retrieve(np.zeros(3), np.ones((4, 3)), **args)


def test_bad_queries_are_clear_errors():
    with pytest.raises(ValueError, match="dimension"):
        retrieve(np.zeros(4), np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        retrieve(np.array([np.nan, 0, 0]), np.ones((4, 3)))
    with pytest.raises(ValueError, match="empty"):
        retrieve(np.zeros(3), np.ones((0, 3)))
    assert softmax_weights(np.array([1.0, 1.0]), 0.5).tolist() == [0.5, 0.5]


def _libraries(rng):
    """Centroid matrices that stress the index: spread, offset and large, clustered with exact
    duplicates (ties), tiny."""
    yield rng.normal(size=(700, 768)).astype(np.float32)
    yield (rng.normal(size=(900, 64)) * 50 + 100).astype(np.float32)
    places = rng.normal(size=(60, 16))
    yield np.repeat(places, 12, axis=0).astype(np.float32)        # every centroid 12 times
    yield (rng.normal(size=(600, 3)) * 1e-3).astype(np.float32)


def test_index_returns_exactly_what_the_full_pass_returns():
    from semla_ros.core.retrieval import CentroidIndex

    rng = np.random.default_rng(0)
    for centroids in _libraries(rng):
        index = CentroidIndex(centroids, prefilter=True)
        assert index._half is not None                 # the float16 prefilter is what is tested here
        spread = float(centroids.std())
        queries = [centroids[5].astype(np.float64),                              # an exact match
                   centroids[17] + rng.normal(size=centroids.shape[1]) * spread * 0.05,
                   rng.normal(size=centroids.shape[1]) * spread + centroids.mean(0),
                   rng.normal(size=centroids.shape[1]) * spread * 1e6]           # far outside (exact pass)
        for q in queries:
            for k in (1, 5, 7):
                fast, full = retrieve(q, index, k, 0.05), retrieve(q, centroids, k, 0.05)
                assert np.array_equal(fast.indices, full.indices)
                assert np.array_equal(fast.distances, full.distances) and np.array_equal(fast.weights, full.weights)
        # excluded rows: as if they were not in the library
        drop = [int(i) for i in retrieve(queries[1], centroids, 3, 0.05).indices]
        keep = np.setdiff1d(np.arange(len(centroids)), drop)
        fast = retrieve(queries[1], index.excluding(drop), 5, 0.05)
        full = retrieve(queries[1], centroids[keep], 5, 0.05)
        assert np.array_equal(fast.indices, keep[full.indices]) and np.array_equal(fast.weights, full.weights)
    nothing = retrieve(np.zeros(3), CentroidIndex(np.ones((2, 3))).excluding([0, 1]))   # nothing usable left
    assert nothing.indices.size == 0 and nothing.support == 0.0


def test_fixture_retrieval_through_the_library_index(fixture_dir):
    expected = np.load(fixture_dir / "fusion_expected.npz")
    lib = AdapterLibrary.open(fixture_dir / "loradb", navigator_dim=768)
    r = retrieve(expected["query_embedding"], lib.index, top_k=2, temperature=0.05)
    assert [lib.names[i] for i in r.indices] == list(expected["semla_adapters"])
    np.testing.assert_allclose(r.weights, expected["semla_weights"], rtol=0, atol=1e-9)
