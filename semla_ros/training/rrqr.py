"""RecycleLoRA-style initialisation of a LoRA `A` factor from a rank-revealing QR of the frozen weight.

RecycleLoRA's idea: the pretrained weight already "knows" which input directions it uses a lot
(major) and which it hardly uses (minor). A main adapter started on the minor directions can
learn new, domain-specific features without fighting what the network already does; a small
sub adapter started on the major directions can still re-weight the dominant features. Both
directions come from a pivoted (rank-revealing) QR, cheaper than an SVD and with an explicit
importance order.

What is implemented here, exactly, for one Linear weight W (out x in), LoRA rank r, sub rank s:

1. `scipy.linalg.qr(W.T, mode="economic", pivoting=True)`: W.T[:, piv] = Q R with
   |R_11| >= |R_22| >= ...; Q (in x k, k = min(in, out)) is an orthonormal basis of W's row
   space (the input directions W reads), ordered from most to least important: Q[:, 0] is the
   direction of the strongest row of W, each next column is the strongest remaining row
   orthogonalised against the previous ones (Businger-Golub column pivoting).
2. main part (rank r - s): A_main = Q[:, k-(r-s):k].T, the last (minor) directions;
   sub part (rank s):      A_sub  = Q[:, :s].T, the first (major) directions.
   A = [A_main; A_sub] (r x in), each row scaled to the row norm of PEFT's default
   (kaiming-uniform, a=sqrt(5)) initialisation, sqrt(1/3), so only the directions differ from
   a standard adapter and the learning-rate / scaling regime stays the same.
3. B = 0 (r x out).

Deviation from RecycleLoRA, and why: RecycleLoRA (like PiSSA/MiLoRA) puts non-zero
components into BOTH factors and subtracts them from the frozen weight, so the model is
unchanged at step 0. A SemLA library adapter must instead be a pure delta against ONE shared
base weight (fusion computes W_base + sum_i w_i s_i B_i A_i for any mix of adapters), so the
base weight cannot be modified per adapter. Keeping B = 0 makes the initial delta exactly zero
with the base weight untouched, and the RRQR choice lives in A's row space, which is the
input subspace the adapter's update reads from. Main and sub share one rank-r LoRA (same
alpha / r scaling), so the saved entry has the official layout and exactly the parameter
count of a standard rank-r adapter: the comparison is at the same budget.
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
