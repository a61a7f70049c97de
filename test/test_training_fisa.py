"""FISA profile: frozen mask generator, semantic guidance from the class text in early image blocks, and only the
CLIP image targets it names are trained (counted); the entry is a plain LoRA on existing Linear weights."""
import numpy as np
import pytest
import torch
from eval_world import small_model
from test_training_rrqr import projector

from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.demo import world
from semla_ros.training import fisa
from semla_ros.training.loop import LoopSettings
from semla_ros.training.lora import PEFT_ADAPTER, TrainSettings, save_entry, train_adapter

VISUAL = "sem_seg_head.predictor.clip_model.visual.transformer.resblocks."


@pytest.fixture(scope="module")
def setup():
    model = small_model()
    images, labels = world.dataset("night", range(4), (96, 128))
    predictor = CatSegPredictor(model, world.CLASS_NAMES)
    with torch.no_grad():
        clip_inputs = torch.cat([predictor.preprocess(im)[0] for im in images])
        text = model.encode_text(predictor.tokens)
    return model, list(images), list(labels), clip_inputs, text


def test_targets_are_the_image_towers_q_v_and_early_c_proj(setup):
    model = setup[0]
    targets = fisa.fisa_targets(model)
    expected = [f"{VISUAL}{b}.attn.q_proj" for b in range(3)] + [f"{VISUAL}{b}.attn.v_proj" for b in range(4)] + \
        [f"{VISUAL}{b}.mlp.c_proj" for b in (0, 1)]
    assert sorted(targets) == sorted(expected)   # 4 blocks: the dense last block's q never runs
    assert fisa.guided_blocks(model) == [0, 1]


def test_semantic_direction_is_the_steepest_way_to_class_c(setup):
    model, _, _, clip_inputs, text = setup
    directions = fisa.semantic_directions(model, clip_inputs, text, [0, 1])
    assert directions[0].shape == (64, len(world.CLASS_NAMES))
    block = model.clip_model.visual.transformer.resblocks[1]

    def mean_cosine(c, push):
        hook = block.register_forward_hook(lambda _m, _i, out: out + push)
        try:
            with torch.no_grad():
                dense = torch.nn.functional.normalize(model.image_features(clip_inputs[:16]).dense, dim=1)
        finally:
            hook.remove()
        return float(torch.einsum("nehw,e->nhw", dense, text[c]).mean())

    g = torch.Generator().manual_seed(0)
    for c in (0, 5):
        base = mean_cosine(c, 0.0)
        along = mean_cosine(c, 1e-3 * directions[1][:, c]) - base
        random = [mean_cosine(c, 1e-3 * torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0)) - base
                  for _ in range(5)]
        assert along > 0 and along > max(random)


@pytest.fixture(scope="module")
def trained(setup):
    model, images, labels, _, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(profile="fisa", loop=LoopSettings(steps=1, batch_size=2, lr=1e-6, warmup_steps=0))
    return train_adapter(model, world.CLASS_NAMES, images, labels, "night", settings), before


def test_trains_only_the_parameters_it_names(setup, trained):
    model = setup[0]
    result, before = trained
    targets = fisa.fisa_targets(model)
    trainable = {n: p for n, p in result.peft_model.named_parameters() if p.requires_grad}
    owners = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable}
    assert owners == set(targets)
    assert all(f".{PEFT_ADAPTER}." in n for n in trainable)
    expected = sum(8 * (model.get_submodule(t).in_features + model.get_submodule(t).out_features) for t in targets)
    assert result.trainable_parameters == sum(p.numel() for p in trainable.values()) == expected
    # the mask generator (aggregator + decoder) and the text tower carry no LoRA; the base is untouched
    assert not any("predictor.transformer." in n or "upsample" in n or "clip_model.transformer." in n for n in owners)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_guidance_starts_as_the_class_directions_and_the_entry_is_plain(setup, trained, tmp_path):
    model, _, _, clip_inputs, text = setup
    result, _ = trained
    # train_adapter saw every training image; recompute on the same ones
    directions = fisa.semantic_directions(model, clip_inputs, text, [0, 1])
    for block in (0, 1):
        layer = result.model.get_submodule(f"{VISUAL}{block}.mlp.c_proj")
        b = layer.lora_B[PEFT_ADAPTER].weight.detach()[:, :8].double().numpy()  # after one step at LR 1e-6
        np.testing.assert_allclose(projector(b.T), projector(directions[block].double().numpy().T), atol=1e-3)
    path = save_entry(result, tmp_path / "lib", np.zeros(4, np.float32), {"navigator": "test"})
    from semla_ros.core.library import load_entry

    entry = load_entry(path, model=model)
    assert set(entry.factors) == set(fisa.fisa_targets(model)) and entry.rank == 8


def test_fisa_with_another_init_is_refused():
    with pytest.raises(ValueError, match="fisa"):
        TrainSettings(profile="fisa", init="recyclelora")
    with pytest.raises(ValueError, match="profile"):
        TrainSettings(profile="semla-lite")
