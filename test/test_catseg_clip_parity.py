"""Our CLIP towers compute what open_clip computes, given the same (random) weights.

The dense last block is a documented CAT-Seg variant, so the comparison uses the standard image path; the
guidance taps (raw residual stream after middle blocks) are compared with open_clip's intermediates too.
"""
from __future__ import annotations

import pytest
import torch

from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.checkpoint import load_clip_state_dict
from semla_ros.catseg.config import AggregatorConfig, CatSegConfig, TextConfig, VisionConfig
from semla_ros.catseg.tokenizer import tokenize_class_names

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def towers():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(1234)
    reference = CLIP(32, CLIPVisionCfg(layers=3, width=64, head_width=32, patch_size=16, image_size=64),
                     CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
                     quick_gelu=True).eval()
    # open_clip zero-initialises some tensors; make every weight informative
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                param.normal_(1.0, 0.1)  # LayerNorm gains near 1, as in trained CLIP
            else:
                param.normal_(0.0, 0.05)
    config = CatSegConfig(
        name="clip_parity", embed_dim=32,
        vision=VisionConfig(width=64, layers=3, heads=2, patch_size=16, pretrain_resolution=64, tap_blocks=(0, 1)),
        text=TextConfig(width=32, layers=2, heads=2),
        aggregator=AggregatorConfig(hidden_dim=64, text_guidance_proj_dim=32, appearance_guidance_proj_dim=32),
    )
    ours = build_catseg(config)
    load_clip_state_dict(ours, reference.state_dict())
    return reference, ours


def test_image_features_equal_open_clip(towers):
    reference, ours = towers
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.encode_image(images)
        actual = ours.clip_model.encode_image(images)
    assert actual.shape == (2, 32)
    assert (actual - expected).abs().max().item() < 1e-5
    assert expected.abs().max().item() > 0.1  # not a trivially small signal


def test_text_features_equal_open_clip(towers):
    reference, ours = towers
    tokens = tokenize_class_names(["road, street", "sky", "a very long name of a traffic sign"])
    with torch.no_grad():
        expected = reference.encode_text(tokens)
        actual = ours.clip_model.encode_text(tokens)
        normalised = ours.encode_text(tokens)
    assert (actual - expected).abs().max().item() < 1e-5
    assert torch.allclose(normalised.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_guidance_taps_equal_open_clip_intermediates(towers):
    reference, ours = towers
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        inter = reference.visual.forward_intermediates(images, indices=[0, 1], intermediates_only=True)
        features = ours.clip_model.visual.forward_dense(images)
    tap0, tap1 = inter["image_intermediates"]
    assert features.tap0.shape == tap0.shape == (1, 64, 4, 4)
    assert (features.tap0 - tap0).abs().max().item() < 1e-5
    assert (features.tap1 - tap1).abs().max().item() < 1e-5


def test_dense_block_is_the_documented_variant(towers):
    """Last block: out_proj(v) + CLS of the block input, then the MLP; no attention mixing."""
    _, ours = towers
    visual = ours.clip_model.visual
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x, _, _ = visual.embed(images)
        for block in list(visual.transformer.resblocks)[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        v = torch.nn.functional.linear(last.ln_1(x), last.attn.v_proj.weight, last.attn.in_proj_bias[128:])
        v = last.attn.out_proj(v) + x[:, :1]
        v = v + last.mlp(last.ln_2(v))
        expected = (visual.ln_post(v) @ visual.proj)[:, 1:].transpose(1, 2).reshape(1, 32, 4, 4)
        actual = visual.forward_dense(images).dense
    assert torch.allclose(actual, expected, atol=1e-6)
    # no attention mixing in the dense block: perturbing one patch token changes only that output token
    with torch.no_grad():
        other = x.clone()
        other[:, 5] += torch.randn(other.shape[-1])
        changed = (last.forward_dense(other) - last.forward_dense(x)).abs().amax(dim=-1)[0]
    assert changed[5] > 1e-3
    assert torch.cat([changed[:5], changed[6:]]).max() == 0
