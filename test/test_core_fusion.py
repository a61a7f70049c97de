"""Fusion: equal to PEFT's own cat merge, exact staging and restoring, no drift over many swaps."""
import copy
import random
from types import SimpleNamespace

import pytest
import torch
from core_models import Chain, random_factors
from peft import LoraConfig, get_peft_model

from semla_ros.core.fusion import WeightStager, fuse_deltas

SHAPES = {"enc.0.fc": (24, 16), "enc.1.fc": (20, 24), "enc.1.gate": (20, 20), "head": (5, 20)}


def make_entries(seed=0):
    g = torch.Generator().manual_seed(seed)
    specs = [("fog", 4, 8.0, list(SHAPES)), ("night", 2, 3.0, list(SHAPES)), ("rain", 4, 4.0, ["enc.0.fc", "head"])]
    entries = []
    for name, r, alpha, targets in specs:
        factors = random_factors({t: SHAPES[t] for t in targets}, r, g, std=0.3)
        entries.append(SimpleNamespace(name=name, factors=factors, scaling=alpha / r, rank=r, alpha=alpha))
    return entries


def renamed(entries):
    """The entries with the module names of the Chain model ("body.<name>")."""
    return [SimpleNamespace(name=e.name, factors={f"body.{m}": f for m, f in e.factors.items()}, scaling=e.scaling)
            for e in entries]


def write(model, fused):
    """What the predictor's load_weights does with staged weights (the model here is not a CATSeg)."""
    with torch.no_grad():
        for module, value in fused.weights.items():
            model.get_submodule(module).weight.copy_(value)


def peft_model(base, entries):
    model = None
    for e in entries:
        config = LoraConfig(r=e.rank, lora_alpha=e.alpha, target_modules=[f"body.{t}" for t in e.factors],
                            lora_dropout=0.0, init_lora_weights=True)
        if model is None:
            model = get_peft_model(copy.deepcopy(base), config, adapter_name=e.name)
        else:
            model.add_adapter(e.name, config)
        for t, (a, b) in e.factors.items():
            layer = model.base_model.model.body.get_submodule(t)
            layer.lora_A[e.name].weight.data.copy_(a)
            layer.lora_B[e.name].weight.data.copy_(b)
    return model.eval()


def test_equals_peft_add_weighted_adapter_cat():
    base = Chain(SHAPES).eval()
    entries = make_entries()
    weights = [0.5730039009253379, 0.3, 0.1269960990746621]
    peft = peft_model(base, entries)
    peft.add_weighted_adapter([e.name for e in entries], weights, "merged", combination_type="cat")
    peft.set_adapter("merged")
    deltas = fuse_deltas(entries, weights)
    assert set(deltas) == set(SHAPES)
    for t, delta in deltas.items():
        layer = peft.base_model.model.body.get_submodule(t)
        # bit-identical to PEFT's own merged delta (same arithmetic, one matmul)
        assert torch.equal(delta, layer.get_delta_weight("merged")), t
    fused = copy.deepcopy(base)
    write(fused, WeightStager(fused, [f"body.{t}" for t in SHAPES]).stage_fusion(renamed(entries), weights))
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, theirs, plain = fused(x), peft(x), base(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert (ours - plain).abs().max() > 1e-2   # the fusion really changes the output


def test_one_matmul_equals_sum_of_products_in_float64():
    entries = make_entries(1)
    weights = [0.2, 0.5, 0.3]
    deltas = fuse_deltas(entries, weights, dtype=torch.float64)
    for t, delta in deltas.items():
        expected = sum(w * e.scaling * (e.factors[t][1].double() @ e.factors[t][0].double())
                       for e, w in zip(entries, weights, strict=True) if t in e.factors)
        torch.testing.assert_close(delta, expected, rtol=1e-12, atol=1e-14)


def test_no_drift_after_1000_random_swaps_and_exact_restore():
    torch.manual_seed(0)
    entries = renamed(make_entries(2))
    targets = [f"body.{t}" for t in SHAPES]
    model = Chain(SHAPES)
    pristine = copy.deepcopy(model.state_dict())
    stager = WeightStager(model, targets)
    rng = random.Random(0)
    for _ in range(1000):
        subset = rng.sample(entries, rng.randint(1, 3))
        raw = [rng.random() + 1e-3 for _ in subset]
        write(model, stager.stage_fusion(subset, [w / sum(raw) for w in raw]))
    write(model, stager.stage_fusion(entries[:2], [0.6, 0.4]))
    fresh = Chain(SHAPES)
    write(fresh, WeightStager(fresh, targets).stage_fusion(entries[:2], [0.6, 0.4]))
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    write(model, stager.base_weights())
    for key, value in pristine.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_stage_touches_nothing_and_rejects_bad_entries():
    model = Chain(SHAPES)
    before = copy.deepcopy(model.state_dict())
    stager = WeightStager(model, ["body.head"])
    one = [SimpleNamespace(factors={"body.head": (torch.ones(1, 20), torch.ones(5, 1))}, scaling=1.0)]
    staged = stager.stage_fusion(one, [1.0])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(staged.weights["body.head"], before["body.head.weight"] + 1)
    assert set(staged.parameter_overrides()) == {"body.head.weight"}
    with pytest.raises(ValueError, match="does not match"):    # a delta of the wrong shape
        stager.stage_fusion([SimpleNamespace(factors={"body.head": (torch.ones(1, 5), torch.ones(20, 1))},
                                             scaling=1.0)], [1.0])
    with pytest.raises(ValueError, match="not fusion targets"):
        stager.stage_fusion([SimpleNamespace(factors={"body.enc.0.fc": (torch.ones(1, 16), torch.ones(24, 1))},
                                             scaling=1.0)], [1.0])
    with pytest.raises(ValueError, match="not finite"):
        stager.stage_fusion([SimpleNamespace(factors={"body.head": (torch.full((1, 20), float("nan")),
                                                                     torch.ones(5, 1))}, scaling=1.0)], [1.0])
    with pytest.raises(ValueError, match="not a module"):
        WeightStager(model, ["body.nope"])


def test_half_precision_weights_round_once_from_float32():
    model = Chain(SHAPES).half()
    stager = WeightStager(model, ["body.head"])
    a, b = torch.randn(2, 20) * 1e-2, torch.randn(5, 2) * 1e-2
    staged = stager.stage_fusion([SimpleNamespace(factors={"body.head": (a, b)}, scaling=1.0)], [1.0])
    expected = (stager.base_weights().weights["body.head"].float() + b @ a).half()
    assert torch.equal(staged.weights["body.head"], expected)


def test_stage_fusion_reuses_buffers_bit_identical_to_base_plus_fuse_deltas():
    entries = renamed(make_entries(4))
    targets = [f"body.{t}" for t in SHAPES]
    model = Chain(SHAPES)
    applier = WeightStager(model, targets)
    first = applier.stage_fusion(entries, [0.5, 0.3, 0.2])
    pointers = {n: t.data_ptr() for n, t in first.weights.items()}
    deltas = fuse_deltas(entries, [0.2, 0.3, 0.5])
    base = applier.base_weights().weights
    second = applier.stage_fusion(entries, [0.2, 0.3, 0.5])
    assert {n: t.data_ptr() for n, t in second.weights.items()} == pointers     # no new allocation per swap
    for name in targets:
        assert torch.equal(second.weights[name], base[name] + deltas[name]), name
    only_c = applier.stage_fusion(entries[2:], [1.0])     # modules without an adapter stay W_base
    assert torch.equal(only_c.weights["body.enc.1.fc"], base["body.enc.1.fc"])
    huge = [SimpleNamespace(factors={"body.head": (torch.full((2, 20), 1e20), torch.full((5, 2), 1e20))},
                            scaling=1.0)]
    with pytest.raises(ValueError, match="not finite"):
        applier.stage_fusion(huge, [1.0])
    with pytest.raises(ValueError, match="not fusion targets"):
        applier.stage_fusion([SimpleNamespace(factors={"body.x": (torch.ones(1, 2), torch.ones(2, 1))},
                                              scaling=1.0)], [1.0])


def test_lazy_library_entries_fuse_like_peft_bit_for_bit(tmp_path):
    """Entries read from disk on first use (the library's way) give PEFT's own merged delta."""
    import numpy as np

    from semla_ros.core.library import AdapterLibrary, write_entry

    entries = make_entries(5)
    for i, e in enumerate(entries):
        write_entry(tmp_path, e.name, {f"body.{t}": f for t, f in e.factors.items()}, np.full(2, float(i)),
                    lora_alpha=e.alpha)
    library = AdapterLibrary.open(tmp_path)
    lazy = [library[e.name] for e in entries]
    assert all(e.lazy and not e.cached for e in lazy)
    weights = [0.2, 0.5, 0.3]
    base = Chain(SHAPES).eval()
    peft = peft_model(base, entries)
    peft.add_weighted_adapter([e.name for e in entries], weights, "merged", combination_type="cat")
    for t, delta in fuse_deltas(lazy, weights).items():
        assert torch.equal(delta, peft.base_model.model.body.get_submodule(t[len("body."):]).get_delta_weight("merged"))
    targets = [f"body.{t}" for t in SHAPES]
    staged = WeightStager(base, targets).stage_fusion(lazy, weights).weights
    expected = WeightStager(base, targets).stage_fusion(renamed(entries), weights).weights
    assert all(torch.equal(staged[t], expected[t]) for t in targets)


def test_absurd_deltas_are_refused_before_they_reach_a_model():
    """|dW| beyond MAX_DELTA_RATIO x |W_base| (finite, e.g. lora_alpha 1e30) fails staging; check_adapter
    finds it from one adapter's factors alone."""
    from semla_ros.core.fusion import MAX_DELTA_RATIO

    model = Chain(SHAPES)
    stager = WeightStager(model, ["body.head"])
    norm = float(model.body.head.weight.detach().norm())
    a, b = torch.ones(1, 20), torch.ones(5, 1)                      # |B A|_F = 10
    sane = SimpleNamespace(factors={"body.head": (a, b)}, scaling=0.9 * MAX_DELTA_RATIO * norm / 10)
    absurd = SimpleNamespace(factors={"body.head": (a, b)}, scaling=1.1 * MAX_DELTA_RATIO * norm / 10)
    stager.check_adapter(sane)
    stager.stage_fusion([sane], [1.0])
    with pytest.raises(ValueError, match="times the weight"):
        stager.check_adapter(absurd)
    with pytest.raises(ValueError, match="times the weight"):
        stager.stage_fusion([sane, absurd], [0.1, 0.9])
    alpha_1e30 = SimpleNamespace(factors={"body.head": (a * 1e-3, b * 1e-3)}, scaling=1e30)   # finite dW ~1e25
    with pytest.raises(ValueError, match="times the weight"):
        stager.stage_fusion([alpha_1e30], [1.0])
    with pytest.raises(ValueError, match="not a fusion target"):
        stager.check_adapter(SimpleNamespace(factors={"body.enc.0.fc": (a, b)}, scaling=1.0))
