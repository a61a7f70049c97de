"""Libraries at fleet scale (issue 18): opening reads no factor, factors are read on first use into an
LRU cache bounded in MB, lazy entries fuse exactly like eager ones, files changed after open are handled
at fusion time, and read-ahead fills the cache."""
import gc
import json
import os
import weakref

import numpy as np
import pytest
import torch
from core_models import linear_model, random_factors
from safetensors.torch import load_file

from semla_ros.core.factor_cache import FactorCache
from semla_ros.core.fusion import WeightStager
from semla_ros.core.library import (
    MEDIAN_SAMPLE,
    OFFICIAL_INERT_TARGET,
    AdapterEntry,
    AdapterLibrary,
    InvalidEntryError,
    write_entry,
)

SHAPES = {"blocks.0.fc": (48, 32), "blocks.1.fc": (16, 48)}
RANK = 4
ENTRY_BYTES = sum(RANK * (o + i) for o, i in SHAPES.values()) * 4     # float32 factors of one entry
CENTROIDS = {"a": [0.0, 0.0, 0.0], "b": [4.0, 0.0, 0.0], "c": [0.0, 4.0, 0.0], "d": [0.0, 0.0, 4.0],
             "e": [4.0, 4.0, 0.0], "f": [4.0, 4.0, 4.0]}


def make_library(root, names=tuple(CENTROIDS), seed=0):
    g = torch.Generator().manual_seed(seed)
    written = {}
    for name in names:
        written[name] = random_factors(SHAPES, RANK, g, std=0.1)
        write_entry(root, name, written[name], CENTROIDS[name], lora_alpha=8, metadata={"embedding_dim": 3})
    return written


def weights_file(root, name):
    return root / name / "adapter_model.safetensors"


def nan_data(path):
    """Keep the safetensors header, turn every factor value into NaN (0xff bytes)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)
    path.write_bytes(bytes(data))


def test_open_reads_no_factor_and_first_use_validates(tmp_path):
    written = make_library(tmp_path)
    nan_data(weights_file(tmp_path, "b"))                 # the header is intact, the values are not
    lib = AdapterLibrary.open(tmp_path, model=linear_model(SHAPES))
    assert lib.names == tuple(CENTROIDS) and lib.skipped == []     # only headers were read
    assert lib.cache.stats().items == 0 and not any(e.cached for e in lib.entries)
    assert all(e.lazy and e.modules == tuple(SHAPES) and e.rank == RANK for e in lib.entries)
    with pytest.raises(InvalidEntryError, match="NaN or inf"):
        _ = lib["b"].factors
    a = lib["a"].factors                                  # read on first use, exactly what was written
    assert all(torch.equal(a[m][0], written["a"][m][0]) and torch.equal(a[m][1], written["a"][m][1]) for m in SHAPES)
    assert lib["a"].cached and lib.cache.stats().items == 1 and lib["a"].factors is a   # the cache's copy
    # a fusion near b skips it with its reason and retrieves again without it
    selection = lib.select([3.9, 0.0, 0.0], top_k=2, temperature=0.05)
    assert [e.name for e in selection.entries] == ["a", "e"] and not any(e.lazy for e in selection.entries)
    assert [n for n, _ in selection.skipped] == ["b"] and "NaN or inf" in selection.skipped[0][1]
    assert lib.failed == list(selection.skipped)
    assert 1 not in lib.select([3.9, 0.0, 0.0], top_k=6).retrieval.indices    # excluded from now on
    assert lib.reload().failed == []                      # a new snapshot tries again


def test_lru_cache_bound_holds_and_evicted_factors_are_freed(tmp_path):
    make_library(tmp_path)
    cache = FactorCache(2.5 * ENTRY_BYTES / 2 ** 20)      # room for two entries
    lib = AdapterLibrary.open(tmp_path, cache=cache)
    first = weakref.ref(lib["a"].factors["blocks.0.fc"][0])
    for name in ("b", "c", "b", "d"):
        _ = lib[name].factors
        stats = cache.stats()
        assert stats.bytes <= stats.max_bytes and stats.items <= 2
    assert [e.name for e in lib.entries if e.cached] == ["b", "d"]       # c was the least recently used
    assert cache.stats().evictions == 2 and cache.stats().bytes == 2 * ENTRY_BYTES
    gc.collect()
    assert first() is None                                # evicted and nobody held it: the memory is back
    held = lib["c"].load()                                # a fusion's copy stays whatever the cache does
    cache.resize(0)
    assert cache.stats().items == 0 and not lib["c"].cached and held.cached and not held.lazy
    assert torch.equal(held.factors["blocks.1.fc"][1], lib["c"].factors["blocks.1.fc"][1])   # read again
    assert cache.stats().items == 0                       # nothing kept at size 0
    with pytest.raises(ValueError, match="MB"):
        cache.resize(-1)


def refuse(entry):
    raise ValueError("refused by the check")


def test_files_changed_after_open_are_handled_at_fusion_time(tmp_path):
    make_library(tmp_path / "lib", names=("a", "b", "c"))
    make_library(tmp_path / "other", names=("b",), seed=7)
    lib = AdapterLibrary.open(tmp_path / "lib")
    in_use = lib["a"].factors
    path = weights_file(tmp_path / "lib", "a")
    path.write_bytes(path.read_bytes()[:100])                                    # a: truncated in place
    os.replace(weights_file(tmp_path / "other", "b"), weights_file(tmp_path / "lib", "b"))   # b: replaced
    selection = lib.select([3.9, 0.0, 0.0], top_k=2)
    assert [n for n, _ in selection.skipped] == ["b"] and "changed on disk" in selection.skipped[0][1]
    assert [e.name for e in selection.entries] == ["a", "c"]          # a: the copy validated and cached
    assert selection.entries[0].factors["blocks.0.fc"][0] is in_use["blocks.0.fc"][0]
    new = lib.reload()                                                # the operator reloads
    assert new.names == ("b", "c") and "unreadable" in dict(new.skipped)["a"]
    on_disk = load_file(str(weights_file(tmp_path / "lib", "b")))
    assert torch.equal(new["b"].factors["blocks.0.fc"][0], on_disk["base_model.model.blocks.0.fc.lora_A.weight"])
    with pytest.raises(ValueError, match="no usable adapter is left.*refused by the check"):
        new.select([0.0, 0.0, 0.0], top_k=1, check=refuse)


def test_reload_keeps_unchanged_adapters_cached_and_prefetch_reads_ahead(tmp_path):
    make_library(tmp_path, names=("a", "b", "c"))
    lib = AdapterLibrary.open(tmp_path)
    assert lib.prefetch([0, 1]) == 2 and lib.prefetch([0, 1]) == 0       # read once
    write_entry(tmp_path, "b", random_factors(SHAPES, RANK, torch.Generator().manual_seed(9)), CENTROIDS["b"],
                lora_alpha=8, metadata={"embedding_dim": 3}, overwrite=True)
    new = lib.reload()
    assert new.cache is lib.cache and new["a"].cached and not new["b"].cached and not new["c"].cached
    misses = lib.cache.stats().misses
    _ = new["a"].factors
    assert lib.cache.stats().misses == misses             # a is still the same file: no read
    nan_data(weights_file(tmp_path, "c"))
    assert new.prefetch([2]) == 0 and [n for n, _ in new.failed] == ["c"]   # found bad ahead of a fusion


def test_lazy_entries_fuse_bit_for_bit_like_eager_ones_on_fixture_a(fixture_dir):
    """The official loradb through lazy entries vs its factors read the previous way (safetensors'
    load_file) into entries that hold them: identical staged weights."""
    lib = AdapterLibrary.open(fixture_dir / "loradb", navigator_dim=768)
    eager = []
    for e in lib.entries:
        raw = load_file(str(e.path / "adapter_model.safetensors"))
        factors = {m: (raw[f"base_model.model.{m}.lora_A.weight"], raw[f"base_model.model.{m}.lora_B.weight"])
                   for m in e.modules}
        assert not any(OFFICIAL_INERT_TARGET.search(m) for m in factors)
        eager.append(AdapterEntry(e.name, factors, e.scaling, e.centroid, {}, True, e.rank))
    shapes = {m: (b.shape[0], a.shape[1]) for m, (a, b) in eager[0].factors.items()}
    model = linear_model(shapes)
    weights = [0.5, 0.3, 0.2]
    lazy = WeightStager(model, lib.target_modules).stage_fusion(lib.entries, weights).weights
    held = WeightStager(model, lib.target_modules).stage_fusion(eager, weights).weights
    assert lazy.keys() == held.keys() == set(shapes)
    assert all(torch.equal(lazy[m], held[m]) for m in shapes)
    assert all(e.lazy for e in lib.entries) and lib.cache.stats().items == 3


def test_median_spacing_is_exact_up_to_the_sample_and_close_beyond(tmp_path):
    rng = np.random.default_rng(0)
    for n in (7, MEDIAN_SAMPLE + 300):
        centroids = rng.normal(size=(n, 16)).astype(np.float32)
        entries = [AdapterEntry(f"e{i}", {"m": (torch.zeros(1, 2), torch.zeros(2, 1))}, 1.0, c, {}, False, 1)
                   for i, c in enumerate(centroids)]
        lib = AdapterLibrary(None, entries)
        c = centroids.astype(np.float64)
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)[np.triu_indices(n, k=1)]
        tolerance = 1e-9 if n <= MEDIAN_SAMPLE else 0.01
        assert lib.median_inter_centroid_distance == pytest.approx(np.median(d), rel=tolerance)
        assert lib.median_inter_centroid_distance == AdapterLibrary(None, entries).median_inter_centroid_distance


def test_metadata_and_centroid_stay_as_written(tmp_path):
    make_library(tmp_path, names=("a", "b"))
    lib = AdapterLibrary.open(tmp_path)
    assert dict(lib["a"].metadata) == json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert not lib["a"].centroid.flags.writeable and lib["b"].centroid.tolist() == CENTROIDS["b"]
    assert np.array_equal(lib.centroids, np.array([CENTROIDS["a"], CENTROIDS["b"]]))
