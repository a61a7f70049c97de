"""Checkpoint compatibility: the official state-dict layouts load strictly, LoRA targets resolve, errors are clear."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from semla_ros.catseg import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    UntrainedAggregatorWarning,
    build_catseg,
    load_catseg_weights,
    load_open_clip_weights,
)

MANIFESTS = {"vitb16_384": "catseg_vitb16_384.json", "vitl14_336": "catseg_vitl14_336.json"}
LORA_CONFIGS = {"vitb16_384": "vitb_384", "vitl14_336": "vitl_336"}


def manifest(reference_dir, name):
    return json.loads((reference_dir / MANIFESTS[name]).read_text())


def synthetic_state_dict(entries, semla_aliases: bool) -> dict[str, torch.Tensor]:
    """Meta tensors with exactly the manifest's keys and shapes; SemLA aliases share the tensor, as in SemLA."""
    state = {}
    for entry in entries:
        if not entry["in_upstream_catseg_checkpoint"]:
            continue
        state[entry["key"]] = torch.empty(entry["shape"], device="meta")
    if semla_aliases:
        for entry in entries:
            if not entry["in_upstream_catseg_checkpoint"]:
                (twin,) = entry["same_tensor_as"]
                state[entry["key"]] = state[twin]
    return state


@pytest.mark.parametrize("semla_aliases", [False, True], ids=["upstream_keys", "semla_alias_keys"])
@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_state_dict_loads_strictly(reference_dir, name, semla_aliases):
    info = manifest(reference_dir, name)
    state = synthetic_state_dict(info["state_dict"], semla_aliases)
    expected_count = info["num_state_dict_keys_semla_module" if semla_aliases
                          else "num_state_dict_keys_upstream_module"]
    assert len(state) == expected_count
    model = build_catseg(name, device="meta")
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # same parameter count as the official module (shared q/k/v counted once)
    assert sum(p.numel() for p in model.parameters()) == info["unique_parameter_count"]
    # the Swin shifted-window masks are persistent buffers of the right shape
    masks = [k for k, _ in model.named_buffers() if k.endswith("attn_mask")]
    assert masks == info["buffers_in_state_dict"]


def test_inconsistent_alias_keys_are_rejected():
    model = build_catseg("tiny")
    state = model.state_dict()
    prefix = "sem_seg_head.predictor.clip_model.visual.transformer.resblocks.0.attn."
    state[prefix + "q_proj_weight"] = state[prefix + "q_proj.weight"] + 1.0
    with pytest.raises(RuntimeError, match="q_proj_weight and .*q_proj.weight are both present but differ"):
        model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", sorted(LORA_CONFIGS))
def test_every_lora_target_is_a_linear_of_the_listed_shape(reference_dir, name):
    targets = json.loads((reference_dir / "lora_targets.json").read_text())[LORA_CONFIGS[name]]["targets"]
    model = build_catseg(name, device="meta")
    existing = [t for t in targets if t["exists"]]
    assert existing, "manifest lists no existing targets"
    for target in existing:
        module = model.get_submodule(target["name"])
        assert isinstance(module, nn.Linear), target["name"]
        assert (module.in_features, module.out_features) == (target["in_features"], target["out_features"])
        assert (module.bias is not None) == target["has_bias"], target["name"]
    for target in targets:
        if not target["exists"]:  # ViT-B has 12 visual blocks; the list names 24
            with pytest.raises(AttributeError):
                model.get_submodule(target["name"])


def test_qkv_linear_modules_are_what_the_forward_uses():
    """A change to attn.v_proj.weight must change the output (LoRA on q/k/v is live in our tree)."""
    torch.manual_seed(0)
    model = build_catseg("tiny")
    tokens = torch.randint(1, 49000, (2, 77))
    tokens[:, 10] = 49407
    before = model.encode_text(tokens)
    with torch.no_grad():
        model.clip_model.transformer.resblocks[0].attn.v_proj.weight.mul_(2.0)
    assert not torch.allclose(before, model.encode_text(tokens))


def test_missing_checkpoint_names_the_file_and_where_to_get_it(tmp_path):
    model = build_catseg("tiny", device="meta")
    path = tmp_path / "model_large.pth"
    with pytest.raises(CheckpointNotFoundError) as info:
        load_catseg_weights(model, path)
    message = str(info.value)
    assert str(path) in message
    assert "model_large.pth" in message and "model_base.pth" in message
    assert "github.com/cvlab-kaist/CAT-Seg" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("layout", ["detectron2", "bare", "safetensors"])
def test_checkpoint_formats_round_trip(tmp_path, layout):
    torch.manual_seed(1)
    source = build_catseg("tiny")
    state = source.state_dict()
    # the official layout: split *_proj_weight names instead of our Linear modules' keys
    official = {k.replace("_proj.weight", "_proj_weight") if ".attn." in k and "out_proj" not in k else k: v
                for k, v in state.items()}
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in official.items()}, str(path))
    else:
        path = tmp_path / "model_final.pth"
        torch.save({"model": official, "iteration": 79999} if layout == "detectron2" else official, path)
    target = build_catseg("tiny")
    load_catseg_weights(target, path)
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_of_another_config_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pth"
    model = build_catseg("tiny")
    good = model.state_dict()
    partial = {k: torch.zeros_like(v) for k, v in good.items() if k.startswith("upsample")}
    partial["sem_seg_head.predictor.transformer.head.weight"] = torch.zeros(1, 7, 3, 3)  # wrong shape
    torch.save({"model": partial}, path)
    with pytest.raises(CheckpointFormatError, match="does not match the CAT-Seg config 'tiny'"):
        load_catseg_weights(model, path)
    # nothing was half loaded
    for key, value in model.state_dict().items():
        assert torch.equal(value, good[key]), key


def test_load_open_clip_weights_from_a_local_checkpoint(tmp_path):
    """The whole open_clip route on a tiny registered config and a local file (no download)."""
    import open_clip

    config = {"embed_dim": 48, "quick_gelu": True,
              "vision_cfg": {"image_size": 224, "layers": 4, "width": 64, "head_width": 32, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2}}
    (tmp_path / "semla-test-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "semla-test-tiny-clip.json")
    torch.manual_seed(2)
    clip = open_clip.create_model("semla-test-tiny-clip")
    weights = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), weights)

    model = build_catseg("tiny")
    aggregator_before = model.aggregator.conv1.weight.clone()
    with pytest.warns(UntrainedAggregatorWarning, match="aggregator and upsamplers are untrained"):
        load_open_clip_weights(model, "semla-test-tiny-clip", str(weights))
    ours = model.clip_model.visual.transformer.resblocks[1].attn
    q, k, v = clip.visual.transformer.resblocks[1].attn.in_proj_weight.chunk(3)
    assert torch.equal(ours.q_proj.weight, q) and torch.equal(ours.k_proj.weight, k)
    assert torch.equal(ours.v_proj.weight, v)
    assert torch.equal(model.clip_model.token_embedding.weight, clip.token_embedding.weight)
    assert torch.equal(model.aggregator.conv1.weight, aggregator_before)

    with pytest.raises(CheckpointNotFoundError, match="open_clip checkpoint"):
        load_open_clip_weights(model, "semla-test-tiny-clip", str(tmp_path / "absent.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedAggregatorWarning)
        with pytest.raises(CheckpointFormatError, match="do not fit"):
            load_open_clip_weights(build_catseg("vitb16_384", device="meta"), "semla-test-tiny-clip", str(weights))


def test_validating_a_checkpoint_imports_no_dynamo(tmp_path):
    """The weightless twin is copied, not built on the meta device: the initialisers' meta kernels import
    torch._dynamo on first use, over a second of every node start."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in build_catseg("tiny").state_dict().items()}, str(path))
    code = (f"import sys; from semla_ros.catseg import build_catseg, load_catseg_weights; "
            f"load_catseg_weights(build_catseg('tiny'), {str(path)!r}); "
            f"print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
