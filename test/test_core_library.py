"""AdapterLibrary: the official loradb layout as-is, validation, skipping bad entries, snapshots."""
import json
import shutil

import numpy as np
import pytest
import torch
from core_models import linear_model, random_factors
from safetensors.torch import load_file

from semla_ros.core.library import AdapterLibrary, write_entry

QKV = ".attn.q_proj"


def fixture_shapes(root):
    tensors = load_file(str(root / "fog" / "adapter_model.safetensors"))
    return {k[len("base_model.model."):-len(".lora_A.weight")]: (tensors[k.replace("lora_A", "lora_B")].shape[0],
                                                                  v.shape[1])
            for k, v in tensors.items() if k.endswith("lora_A.weight")}


def test_official_layout_as_is(loradb):
    raw = load_file(str(loradb / "rain" / "adapter_model.safetensors"))
    model = linear_model(fixture_shapes(loradb))
    lib = AdapterLibrary.open(loradb, navigator_dim=768, model=model)
    assert lib.names == ("fog", "night", "rain") and lib.skipped == []
    assert lib.centroids.shape == (3, 768) and lib.centroids.dtype == np.float64
    rain = lib["rain"]
    assert rain.official_layout and rain.scaling == 2.0 and rain.rank == 8
    # 64 targets on disk, the 18 inert CLIP q/k/v ones dropped
    assert len(rain.factors) == 46 and len(rain.dropped) == 18
    assert not any(QKV in m or ".attn.k_proj" in m or ".attn.v_proj" in m for m in rain.factors)
    name = "sem_seg_head.predictor.transformer.layers.0.attention.MLP.0"
    a, b = rain.factors[name]
    assert torch.equal(a, raw[f"base_model.model.{name}.lora_A.weight"])
    assert torch.equal(b, raw[f"base_model.model.{name}.lora_B.weight"])
    stats = np.load(loradb / "rain" / "rain_statistics.npz")["train_average_embedding"][0]
    assert np.array_equal(rain.centroid, stats) and not rain.centroid.flags.writeable
    c = lib.centroids
    expected = np.median([np.linalg.norm(c[i] - c[j]) for i in range(3) for j in range(i + 1, 3)])
    assert lib.median_inter_centroid_distance == pytest.approx(expected)


def test_our_metadata_keeps_qkv_factors(loradb):
    (loradb / "fog" / "metadata.json").write_text(json.dumps({"navigator": "nav-x", "embedding_dim": 768}))
    lib = AdapterLibrary.open(loradb, navigator_dim=768, navigator_id="nav-x")
    assert not lib["fog"].official_layout and len(lib["fog"].factors) == 64
    assert lib["fog"].metadata["navigator"] == "nav-x"
    other = AdapterLibrary.open(loradb, navigator_dim=768, navigator_id="nav-y")
    assert other.names == ("night", "rain") and "nav-x" in dict(other.skipped)["fog"]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rewrite_centroid(value):
    def corrupt(d):
        np.savez(d / f"{d.name}_statistics.npz", train_average_embedding=value)
    return corrupt


def _wrong_rank_factor(d):
    from safetensors.torch import save_file
    t = load_file(str(d / "adapter_model.safetensors"))
    key = next(k for k in t if k.endswith("MLP.0.lora_B.weight"))
    t[key] = t[key][:, :4].contiguous()
    save_file(t, str(d / "adapter_model.safetensors"))


def _missing_b(d):
    from safetensors.torch import save_file
    t = load_file(str(d / "adapter_model.safetensors"))
    del t[next(k for k in t if k.endswith("MLP.0.lora_B.weight"))]
    save_file(t, str(d / "adapter_model.safetensors"))


CORRUPTIONS = {
    "truncated safetensors": (lambda d: _truncate(d / "adapter_model.safetensors"), "unreadable"),
    "missing weights": (lambda d: (d / "adapter_model.safetensors").unlink(), "missing adapter_model"),
    "bad json": (lambda d: (d / "adapter_config.json").write_text("{ not json"), "not valid JSON"),
    "missing config": (lambda d: (d / "adapter_config.json").unlink(), "missing adapter_config"),
    "missing centroid": (lambda d: (d / f"{d.name}_statistics.npz").unlink(), "missing centroid"),
    "nan centroid": (_rewrite_centroid(np.full((1, 768), np.nan, np.float32)), "NaN"),
    "wrong embedding dim": (_rewrite_centroid(np.zeros((1, 512), np.float32)), "navigator produces 768"),
    "wrong factor rank": (_wrong_rank_factor, "do not fit r=8"),
    "missing lora_B": (_missing_b, "must both be present"),
    "dora": (lambda d: (d / "adapter_config.json").write_text(json.dumps(
        json.loads((d / "adapter_config.json").read_text()) | {"use_dora": True})), "DoRA"),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_each_corrupt_entry_is_skipped_with_reason_and_the_rest_works(loradb, what):
    corrupt, reason = CORRUPTIONS[what]
    good = AdapterLibrary.open(loradb, navigator_dim=768)
    corrupt(loradb / "night")
    lib = AdapterLibrary.open(loradb, navigator_dim=768)
    assert lib.names == ("fog", "rain")
    assert len(lib.skipped) == 1 and lib.skipped[0][0] == "night" and reason in lib.skipped[0][1]
    for name in lib.names:  # the rest is complete and unchanged
        assert lib[name].factors.keys() == good[name].factors.keys()
        assert all(torch.equal(lib[name].factors[m][0], good[name].factors[m][0]) for m in lib[name].factors)
    assert np.array_equal(lib.centroids, good.centroids[[0, 2]])


def test_entries_that_do_not_fit_the_model_are_skipped(loradb):
    shapes = fixture_shapes(loradb)
    mlp = "sem_seg_head.predictor.transformer.layers.0.attention.MLP.0"
    wrong = dict(shapes)
    wrong[mlp] = (shapes[mlp][0], shapes[mlp][1] + 1)
    lib = AdapterLibrary.open(loradb, model=linear_model(wrong))
    assert lib.names == () and all("weight is" in reason for _, reason in lib.skipped)
    missing = {k: v for k, v in shapes.items() if k != mlp}
    lib = AdapterLibrary.open(loradb, model=linear_model(missing))
    assert len(lib.skipped) == 3 and "does not exist" in lib.skipped[0][1]


def test_written_entries_round_trip_and_wrong_dims_without_navigator(tmp_path):
    g = torch.Generator().manual_seed(0)
    shapes = {"blocks.0.fc": (6, 4), "blocks.1.fc": (3, 6)}
    factors = random_factors(shapes, 2, g)
    write_entry(tmp_path, "a", factors, np.ones(5), lora_alpha=4, metadata={"embedding_dim": 5})
    write_entry(tmp_path, "b", factors, np.zeros(5))
    write_entry(tmp_path, "c", factors, np.zeros(7))
    (tmp_path / "README.md").write_text("peft model card")   # files at the root are ignored
    lib = AdapterLibrary.open(tmp_path)
    assert lib.names == ("a", "b") and lib.skipped[0][0] == "c" and lib.dim == 5
    assert lib["a"].scaling == 2.0 and not lib["a"].official_layout and lib["b"].official_layout
    assert torch.equal(lib["a"].factors["blocks.1.fc"][1], factors["blocks.1.fc"][1])
    assert lib.median_inter_centroid_distance == pytest.approx(np.sqrt(5))


def test_reload_is_a_new_snapshot_and_the_old_stays_usable(loradb):
    old = AdapterLibrary.open(loradb, navigator_dim=768)
    fog_a = old["fog"].factors["sem_seg_head.predictor.transformer.layers.0.attention.MLP.0"][0].clone()
    shutil.rmtree(loradb / "fog")
    shutil.copytree(loradb / "rain", loradb / "snow")
    (loradb / "snow" / "rain_statistics.npz").rename(loradb / "snow" / "snow_statistics.npz")
    new = old.reload()
    assert new.names == ("night", "rain", "snow") and new.fingerprint != old.fingerprint
    assert old.names == ("fog", "night", "rain")
    assert torch.equal(old["fog"].factors["sem_seg_head.predictor.transformer.layers.0.attention.MLP.0"][0], fog_a)
    assert old.centroids.shape == (3, 768) and not old.centroids.flags.writeable


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AdapterLibrary.open(tmp_path / "nope")
    assert len(AdapterLibrary.open(tmp_path)) == 0
