"""Rank-revealing QR of a frozen Linear weight: its ordered input directions and components.

A pivoted (rank-revealing) QR says which input directions a pretrained weight uses a lot
(major) and which it hardly uses (minor), like an SVD but cheaper and with an explicit
importance order. Two initialisations build on it:

- `--init recyclelora` (training/recyclelora.py, the paper's dual adapters): `rrqr_components`
  gives the main adapter W's minor components and the sub adapter its major ones as balanced
  (A, B) factors, subtracted from the frozen weight while training.
- `--init rrqr` (this file, kept so existing libraries and results stay reproducible): ONE
  rank-r LoRA whose A rows are directions only, B = 0, base weight untouched.

For one Linear weight W (out x in):

1. `scipy.linalg.qr(W.T, mode="economic", pivoting=True)`: W.T[:, piv] = Q R with
   |R_11| >= |R_22| >= ...; Q (in x k, k = min(in, out)) is an orthonormal basis of W's row
   space (the input directions W reads), ordered from most to least important: Q[:, 0] is the
   direction of the strongest row of W, each next column is the strongest remaining row
   orthogonalised against the previous ones (Businger-Golub column pivoting). So
   W = sum_i b_i Q[:, i]^T, b_i = row i of R with the pivoting undone.
2. `--init rrqr`, rank r, sub rank s: A = [Q[:, k-(r-s):k].T (minor, "main" part);
   Q[:, :s].T (major, "sub" part)], each row scaled to the row norm of PEFT's default
   (kaiming-uniform, a=sqrt(5)) initialisation, sqrt(1/3); B = 0. Main and sub share one
   scaling and one learning rate: the directions are RecycleLoRA's, the dual adapters are not
   (that is what `--init recyclelora` adds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

# Row norm of PEFT's default lora_A init: kaiming_uniform(a=sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in)),
# variance 1/(3 in), so E||row||^2 = 1/3 whatever `in` is.
DEFAULT_ROW_NORM = float(np.sqrt(1.0 / 3.0))


@dataclass(frozen=True)
class RRQRBasis:
    """Pivoted QR of W.T: `q` (in x k) ordered major -> minor, `r_diag` |R_ii|, `pivots`."""

    q: np.ndarray
    r_diag: np.ndarray
    pivots: np.ndarray

    def major(self, n: int) -> np.ndarray:
        return self.q[:, :n]

    def minor(self, n: int) -> np.ndarray:
        k = self.q.shape[1]
        return self.q[:, k - n:k]


def rrqr_basis(weight) -> RRQRBasis:
    """Rank-revealing (column-pivoted) QR of the transposed weight, in float64."""
    w = weight.detach().cpu().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-d Linear weight, got shape {w.shape}")
    q, r, piv = scipy.linalg.qr(w.T, mode="economic", pivoting=True)
    return RRQRBasis(q=q, r_diag=np.abs(np.diag(r)), pivots=piv)


def rrqr_components(weight, indices, scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced LoRA factors (A [n, in], B [out, n]) of the RRQR components `indices` of W.

    W.T[:, piv] = Q R gives W = sum_i b_i a_i^T with a_i = Q[:, i] (unit input direction) and b_i
    = row i of R, un-permuted (what W writes along a_i). Each component is split evenly between
    the factors, a_i sqrt(|b_i| / s) and b_i / sqrt(|b_i| s), so that `scaling * B @ A` is exactly
    those components of W (PiSSA/SoMA-style factors, with RRQR's directions instead of SVD's).
    A component of (near) zero size keeps a small non-zero A row, so its pair can still train.
    """
    w = weight.detach().cpu().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float64)
    basis = rrqr_basis(w)
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= basis.q.shape[1]):
        raise ValueError(f"component indices must be in [0, {basis.q.shape[1]}) for a {w.shape} weight")
    if not scaling > 0:
        raise ValueError(f"scaling must be > 0, got {scaling}")
    rows = basis.q.T @ w.T              # R with the pivoting undone: (k, out), row i = b_i
    b = rows[idx].T                      # (out, n)
    a = basis.q[:, idx].T                # (n, in)
    norms = np.linalg.norm(b, axis=0)
    norms = np.maximum(norms, max(1e-8, 1e-6 * float(norms.max(initial=0.0))))
    a_f = a * np.sqrt(norms / scaling)[:, None]
    b_f = b / np.sqrt(norms * scaling)[None, :]
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    return torch.from_numpy(a_f).to(dtype), torch.from_numpy(b_f).to(dtype)


def split_rank(rank: int, sub_rank: int | None = None) -> tuple[int, int]:
    """(main, sub) ranks; default sub = rank // 4 (at least 1 when rank >= 2)."""
    if sub_rank is None:
        sub_rank = max(1, rank // 4) if rank >= 2 else 0
    if not 0 <= sub_rank < rank:
        raise ValueError(f"sub rank must be in [0, {rank}), got {sub_rank}")
    return rank - sub_rank, sub_rank


def rrqr_lora_a(weight, rank: int, sub_rank: int | None = None, row_norm: float = DEFAULT_ROW_NORM) -> torch.Tensor:
    """A (rank x in) = [minor directions (main); major directions (sub)] of W's row space."""
    main, sub = split_rank(rank, sub_rank)
    basis = rrqr_basis(weight)
    k = basis.q.shape[1]
    if rank > k:
        raise ValueError(f"rank {rank} exceeds min(in, out) = {k} of a {tuple(weight.shape)} weight")
    rows = np.concatenate([basis.minor(main).T, basis.major(sub).T], axis=0) * row_norm
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    return torch.from_numpy(rows).to(dtype)


def init_peft_model_rrqr(peft_model, adapter_name: str, sub_rank: int | None = None) -> list[str]:
    """Overwrites lora_A of every LoRA layer of `adapter_name` with the RRQR init (lora_B stays 0).

    Returns the module names it initialised.
    """
    from peft.tuners.lora import LoraLayer

    done = []
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer) or adapter_name not in module.lora_A:
                continue
            lora_a = module.lora_A[adapter_name].weight
            base = module.get_base_layer().weight
            lora_a.copy_(rrqr_lora_a(base, lora_a.shape[0], sub_rank).to(lora_a))
            module.lora_B[adapter_name].weight.zero_()
            done.append(name)
    if not done:
        raise ValueError(f"no LoRA layers of adapter {adapter_name!r} in the model")
    return done
