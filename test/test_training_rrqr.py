"""The RRQR init puts the main adapter on W's minor input directions and the sub adapter on its major ones."""
import numpy as np
import pytest
import torch

from semla_ros.training.rrqr import DEFAULT_ROW_NORM, rrqr_basis, rrqr_lora_a, split_rank


def projector(rows: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(np.asarray(rows, np.float64).T)
    return q @ q.T


def rotated_weight(seed=0, n_in=10):
    """W (5 x 10) whose rows are 10 e1, 5 e2, 2 e3, 0.5 e4, 0.1 e5 in a rotated input basis:
    the importance order of the input directions is known exactly."""
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.standard_normal((n_in, n_in)))  # columns = the rotated axes
    scales = [10.0, 5.0, 2.0, 0.5, 0.1]
    w = np.stack([s * rot[:, i] for i, s in enumerate(scales)])
    w = w[rng.permutation(5)]  # row order must not matter: pivoting finds the order
    return w, rot


def test_pivoted_qr_orders_directions_major_to_minor():
    w, rot = rotated_weight()
    basis = rrqr_basis(w)
    assert np.all(np.diff(basis.r_diag) <= 1e-12)
    for i in range(5):  # each basis vector is one known axis, in order of importance
        assert abs(abs(basis.q[:, i] @ rot[:, i]) - 1.0) < 1e-10
    # and it is a factorisation of W.T
    np.testing.assert_allclose(basis.q @ (basis.q.T @ w.T), w.T, atol=1e-10)


def test_lora_a_spans_minor_then_major_subspaces():
    w, rot = rotated_weight(seed=3)
    a = rrqr_lora_a(torch.tensor(w, dtype=torch.float32), rank=3, sub_rank=1).double().numpy()
    assert a.shape == (3, 10)
    main, sub = a[:2], a[2:]
    np.testing.assert_allclose(projector(main), projector(rot[:, [3, 4]].T), atol=1e-6)  # 0.5 e4, 0.1 e5
    np.testing.assert_allclose(projector(sub), projector(rot[:, [0]].T), atol=1e-6)      # 10 e1
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), DEFAULT_ROW_NORM, rtol=1e-6)
    # main rows are orthogonal to what W reads most: W barely responds to them
    assert np.linalg.norm(w @ main.T) < 0.6 * DEFAULT_ROW_NORM * np.sqrt(2)
    assert np.linalg.norm(w @ sub.T) > 9.0 * DEFAULT_ROW_NORM


def test_split_rank_and_bad_rank():
    assert split_rank(8) == (6, 2)
    assert split_rank(8, 0) == (8, 0)
    with pytest.raises(ValueError):
        split_rank(8, 8)
    with pytest.raises(ValueError, match="exceeds"):
        rrqr_lora_a(torch.zeros(4, 6), rank=5)


def test_peft_model_init_keeps_output_and_sets_a(tmp_path):
    from peft import LoraConfig, get_peft_model

    from semla_ros.training.rrqr import init_peft_model_rrqr

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6))
    x = torch.randn(3, 12)
    before = base(x).detach().clone()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]), adapter_name="dom")
    names = init_peft_model_rrqr(model, "dom", sub_rank=1)
    assert len(names) == 2
    torch.testing.assert_close(model(x), before)  # B = 0: the model is unchanged at step 0
    layer = model.base_model.model[0]
    expected = rrqr_lora_a(layer.get_base_layer().weight, 4, 1)
    torch.testing.assert_close(layer.lora_A["dom"].weight, expected)


def test_components_are_the_known_parts_of_w_split_evenly():
    from semla_ros.training.rrqr import rrqr_components

    w, rot = rotated_weight(seed=5)
    a, b = rrqr_components(torch.tensor(w), [3, 4], scaling=2.0)
    a, b = a.numpy(), b.numpy()
    # 2 B A = the two weakest parts of W: W restricted to the input axes e4, e5 (0.5 e4, 0.1 e5 rows)
    minor = rot[:, [3, 4]]
    np.testing.assert_allclose(2.0 * b @ a, w @ minor @ minor.T, atol=1e-10)
    np.testing.assert_allclose(projector(a), projector(minor.T), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0), rtol=1e-10)  # balanced
    # all components together are W itself
    a_all, b_all = rrqr_components(torch.tensor(w), range(5), scaling=0.5)
    np.testing.assert_allclose(0.5 * b_all.numpy() @ a_all.numpy(), w, atol=1e-10)
    with pytest.raises(ValueError, match="indices"):
        rrqr_components(torch.tensor(w), [5])
