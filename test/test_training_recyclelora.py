"""RecycleLoRA: main adapter on the minor, sub adapter on the major RRQR components, moved out of the frozen
weight; saved as one plain LoRA that PEFT loads and our fusion applies, equal to what training computed."""
import copy
import json

import numpy as np
import pytest
import torch
from eval_world import small_model
from test_training_rrqr import projector

from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.fusion import WeightStager, fuse_deltas
from semla_ros.core.library import AdapterLibrary, load_entry, write_entry
from semla_ros.demo import world
from semla_ros.training import recyclelora
from semla_ros.training.loop import LoopSettings
from semla_ros.training.lora import TrainSettings, save_entry, train_adapter
from semla_ros.training.rrqr import rrqr_basis

pytestmark = pytest.mark.slow   # its module fixtures train the main and sub adapters (>10 s)


@pytest.fixture(scope="module")
def trained():
    model = small_model()
    images, labels = world.dataset("fog", range(3), (96, 128))
    settings = TrainSettings(init="recyclelora", loop=LoopSettings(steps=1, batch_size=2, lr=1e-2, warmup_steps=0))
    result = train_adapter(model, world.CLASS_NAMES, list(images), list(labels), "fog", settings)
    return model, result


def test_init_moves_minor_and_major_components_out_of_the_weight():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6))
    x = torch.randn(3, 12)
    before = base(x).detach().clone()
    w0 = base[0].weight.detach().clone()
    model = get_peft_model(base, LoraConfig(r=3, lora_alpha=6, target_modules=["0", "2"]),
                           adapter_name=recyclelora.MAIN)
    model.add_adapter(recyclelora.SUB, LoraConfig(r=1, lora_alpha=1, target_modules=["0", "2"]))
    model.base_model.set_adapter([recyclelora.MAIN, recyclelora.SUB])
    initial = recyclelora.init_recyclelora(model, {recyclelora.MAIN: 2.0, recyclelora.SUB: 1.0})
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=1e-6)  # same function at step 0
    layer = model.base_model.model[0]
    basis = rrqr_basis(w0)
    a_main, b_main = initial[recyclelora.MAIN]["0"]
    a_sub, _ = initial[recyclelora.SUB]["0"]
    np.testing.assert_allclose(projector(a_main.double().numpy()), projector(basis.minor(3).T), atol=1e-5)
    np.testing.assert_allclose(projector(a_sub.double().numpy()), projector(basis.major(1).T), atol=1e-5)
    assert torch.equal(layer.lora_A[recyclelora.MAIN].weight, a_main)
    # the frozen weight lost exactly those components
    moved = 2.0 * b_main @ a_main + 1.0 * initial[recyclelora.SUB]["0"][1] @ a_sub
    torch.testing.assert_close(layer.get_base_layer().weight + moved, w0, atol=1e-6, rtol=0)


def test_main_and_sub_train_with_their_own_rates(trained):
    _, result = trained
    assert list(result.scalings) == [recyclelora.MAIN, recyclelora.SUB]
    assert result.scalings[recyclelora.SUB] == pytest.approx(0.5 * result.scalings[recyclelora.MAIN])
    moved = {}
    for name in result.scalings:
        now = result.adapter_factors(name)
        moved[name] = max(float((now[m][0] - a0).abs().max()) for m, (a0, _) in result.initial[name].items())
    # one Adam step moves every factor by about its group's LR: 1e-2 (main) and 1e-3 (sub)
    assert moved[recyclelora.MAIN] == pytest.approx(1e-2, rel=0.05)
    assert moved[recyclelora.SUB] == pytest.approx(1e-3, rel=0.05)
    # main + sub ranks add up to the standard adapter's: same trainable parameters
    assert result.trainable_parameters == sum(8 * (a.shape[1] + b.shape[0])
                                              for a, b in result.adapter_factors(recyclelora.MAIN).values())


def test_saved_entry_loads_in_peft_and_fuses_to_what_training_computed(trained, tmp_path):
    from peft import PeftModel

    model, result = trained
    path = save_entry(result, tmp_path / "lib", np.zeros(4, np.float32), {"navigator": "test"})
    config = json.loads((path / "adapter_config.json").read_text())
    entry = load_entry(path, model=model)
    assert entry.rank == config["r"] == 2 * (6 + 2) and entry.scaling == result.scalings[recyclelora.MAIN]
    assert json.loads((path / "metadata.json").read_text())["init"] == "recyclelora"
    x = torch.randn(2, 3, 96, 96)
    text = torch.nn.functional.normalize(torch.randn(len(world.CLASS_NAMES), model.config.embed_dim), dim=-1)
    peft = PeftModel.from_pretrained(copy.deepcopy(model), str(path)).eval()
    predictor = CatSegPredictor(model, world.CLASS_NAMES)
    stager = WeightStager(model, entry.factors)
    with torch.no_grad():
        trained_out = result.model(x, text)          # residual base + main + sub, as trained
        peft_out = peft.base_model.model(x, text)
        predictor.load_weights(stager.stage_fusion([entry], [1.0]).weights)
        fused_out = model(x, text)
        fused = {m: model.get_submodule(m).weight.detach().clone() for m in entry.factors}
        predictor.load_weights(stager.base_weights().weights)
        merged = peft.merge_and_unload()
    torch.testing.assert_close(peft_out, trained_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_out, peft_out, atol=1e-5, rtol=1e-5)
    for m, w in fused.items():   # PEFT's merge and our fusion: the same weights
        torch.testing.assert_close(merged.get_submodule(m).weight, w, atol=1e-6, rtol=1e-6)


def test_old_and_new_entries_share_one_library_and_fuse(trained, tmp_path, fixture_dir):
    model, result = trained
    root = tmp_path / "lib"
    save_entry(result, root, np.ones(4, np.float32), {"navigator": "test"})
    # an entry as the code before RecycleLoRA wrote it: rank 8, alpha 16, no profile / sub_scale in its metadata
    g = torch.Generator().manual_seed(3)
    old = {m: (torch.randn(8, a.shape[1], generator=g) * 0.1, torch.randn(b.shape[0], 8, generator=g) * 0.1)
           for m, (a, b) in result.factors().items()}
    write_entry(root, "night", old, np.zeros(4, np.float32), lora_alpha=16, metadata={
        "name": "night", "navigator": "test", "embedding_dim": 4, "init": "rrqr",
        "training": {"rank": 8, "alpha": 16.0, "dropout": 0.0, "init": "rrqr", "sub_rank": None}})
    lib = AdapterLibrary.open(root, navigator_dim=4, navigator_id="test", model=model)
    assert lib.names == ("fog", "night") and lib.skipped == []
    assert [e.rank for e in lib.entries] == [16, 8]
    stager = WeightStager(model, lib.target_modules)
    staged = stager.stage_fusion(list(lib.entries), [0.7, 0.3]).weights
    separate = [fuse_deltas([e], [w]) for e, w in zip(lib.entries, [0.7, 0.3], strict=True)]
    for m, w in staged.items():
        expected = stager.base_weights().weights[m] + sum(d[m] for d in separate if m in d)
        torch.testing.assert_close(w, expected, atol=1e-6, rtol=1e-6)
    official = AdapterLibrary.open(fixture_dir / "loradb", navigator_dim=768)  # the official layout, unchanged
    assert official.names == ("fog", "night", "rain") and official.skipped == []


def test_bad_recyclelora_settings_are_refused():
    with pytest.raises(ValueError, match="sub rank"):
        TrainSettings(init="recyclelora", rank=4, sub_rank=4)
    with pytest.raises(ValueError, match="sub_scale"):
        TrainSettings(init="recyclelora", sub_scale=0)
