"""Adapter training with PEFT -> a library entry in the official layout that our fusion reproduces."""
import json

import numpy as np
import pytest
import torch
from eval_world import small_model

from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.fusion import WeightStager
from semla_ros.core.library import load_entry
from semla_ros.core.navigator import TowerNavigator
from semla_ros.demo import world
from semla_ros.demo.export import export_demo_world
from semla_ros.evaluation.dataset import open_domain
from semla_ros.training.loop import LoopSettings, semla_loss
from semla_ros.training.lora import TrainSettings, domain_centroid, save_entry, train_adapter

pytestmark = pytest.mark.slow   # its module fixtures train adapters (~30 s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    model = small_model()
    # "clear" is also a ModuleDict method name: the entry must still be called "clear"
    folder = open_domain(export_demo_world(tmp / "data", ("clear",), 3) / "clear")
    pairs = list(folder.pairs())
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_adapter(model, folder.classes, images, labels, "clear",
                           TrainSettings(loop=LoopSettings(steps=3, batch_size=2, lr=5e-3, warmup_steps=0)))
    return dict(tmp=tmp, model=model, folder=folder, images=images, result=result, before=before)


def test_training_moves_the_adapter_not_the_base(trained):
    model, result = trained["model"], trained["result"]
    assert all(torch.equal(v, trained["before"][k]) for k, v in model.state_dict().items())
    factors = result.factors()
    assert len(factors) == len(result.targets) == 42
    assert max(float(b.abs().max()) for _, b in factors.values()) > 0  # B left its zero init
    assert all(np.isfinite(result.losses)) and len(result.losses) == 3


def test_saved_entry_is_official_layout_and_fuses_to_the_peft_output(trained):
    model, result = trained["model"], trained["result"]
    nav = TowerNavigator(model)
    centroid = domain_centroid(nav, trained["images"])
    path = save_entry(result, trained["tmp"] / "loradb", centroid, {"navigator": nav.id})
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "clear_statistics.npz", "metadata.json"]
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA"
    with np.load(path / "clear_statistics.npz") as z:
        assert z["train_average_embedding"].shape == (1, nav.dim) and z["train_average_embedding"].dtype == np.float32
    entry = load_entry(path, navigator_dim=nav.dim, navigator_id=nav.id, model=model)
    assert entry.scaling == 2.0 and set(entry.factors) == set(result.targets)
    # Our fused weights reproduce what PEFT computed while training (unmerged LoRA forward).
    x = torch.randn(1, 3, 96, 96)
    text = torch.nn.functional.normalize(torch.randn(len(world.CLASS_NAMES), model.config.embed_dim), dim=-1)
    predictor = CatSegPredictor(model, world.CLASS_NAMES)
    stager = WeightStager(model, entry.factors)
    with torch.no_grad():
        peft_out = result.peft_model.base_model.model(x, text)
        predictor.load_weights(stager.stage_fusion([entry], [1.0]).weights)
        fused_out = model(x, text)
        predictor.load_weights(stager.base_weights().weights)
    torch.testing.assert_close(fused_out, peft_out, atol=1e-4, rtol=1e-4)
    with pytest.raises(FileExistsError):
        save_entry(result, trained["tmp"] / "loradb", centroid)


def test_official_loss_treats_ignore_as_all_zero_target():
    logits = torch.zeros(1, 3, 2, 2)
    labels = torch.tensor([[[0, 255], [2, 1]]])
    # all logits 0 -> every element costs log 2, whatever the target: the mean is log 2
    assert semla_loss(logits, labels, 3).item() == pytest.approx(np.log(2))
    logits = torch.full((1, 3, 2, 2), -20.0)
    # with very negative logits only the one-hot 1s cost (~20 each); the ignored pixel adds none
    assert semla_loss(logits, labels, 3).item() == pytest.approx(3 * 20 / 12, rel=1e-3)


def test_rrqr_training_runs_and_settings_are_validated(trained):
    model, folder = trained["model"], trained["folder"]
    pairs = list(folder.pairs())[:2]
    r = train_adapter(model, folder.classes, [p[0] for p in pairs], [p[1] for p in pairs], "fog",
                      TrainSettings(init="rrqr", loop=LoopSettings(steps=1, batch_size=1, lr=1e-6, warmup_steps=0)))
    a, _ = r.factors()[r.targets[-1]]
    norms = a.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, (1 / 3) ** 0.5), atol=1e-3)  # one tiny step from the init
    with pytest.raises(ValueError, match="init"):
        TrainSettings(init="pissa")
    with pytest.raises(ValueError, match="labels"):
        train_adapter(model, folder.classes, [pairs[0][0]], [], "x")
