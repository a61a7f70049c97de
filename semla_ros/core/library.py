"""The adapter library on disk: LoRA factors + a domain centroid per entry.

Reads the official SemLA `loradb/` layout as-is:

    <root>/<name>/adapter_config.json        PEFT LoraConfig
    <root>/<name>/adapter_model.safetensors  base_model.model.<module>.lora_{A,B}.weight
    <root>/<name>/<name>_statistics.npz      train_average_embedding (1,D)
    <root>/<name>/metadata.json              optional, ours (navigator id, dim, ...)

Every entry is validated completely before it is accepted (config, factor names and shapes,
centroid, navigator dimension, model targets); a bad entry is skipped with its reason and
never half-loaded, so one broken adapter cannot take the robot's segmentation down.
A library is an immutable snapshot: `reload()` returns a new one and the old stays usable.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "metadata.json"
CENTROID_KEY = "train_average_embedding"
KEY_PREFIX = "base_model.model."
_FACTOR_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
# CLIP attention q/k/v LoRAs never act in official SemLA (nn.MultiheadAttention reads the raw
# q/k/v_proj_weight parameters), so official-layout adapters must not fuse them.
OFFICIAL_INERT_TARGET = re.compile(r"clip_model\.(visual\.)?transformer\.resblocks\.\d+\.attn\.[qkv]_proj$")


class InvalidEntryError(ValueError):
    """One library entry cannot be used; the message says why."""


def statistics_file(name: str) -> str:
    return f"{name}_statistics.npz"


@dataclass(frozen=True)
class AdapterEntry:
    """One adapter: LoRA factors per target module (A [r,in], B [out,r]) and its domain centroid."""

    name: str
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    scaling: float              # alpha / r (alpha / sqrt(r) with rsLoRA)
    centroid: np.ndarray        # (D,) float32, read-only
    metadata: Mapping[str, object]
    official_layout: bool       # True when there is no metadata.json of ours
    rank: int = 0
    path: Path | None = None
    dropped: tuple[str, ...] = field(default=())  # factors present on disk but not fused (why: see loader)

    @functools.cached_property
    def factor_max(self) -> tuple[float, float]:
        """(max |A|, max |B|) over all modules: lets fusion bound |dW| without scanning it."""
        a_max = max((float(a.abs().max()) for a, _ in self.factors.values() if a.numel()), default=0.0)
        b_max = max((float(b.abs().max()) for _, b in self.factors.values() if b.numel()), default=0.0)
        return a_max, b_max


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidEntryError(f"missing {path.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEntryError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidEntryError(f"{path.name} must hold a JSON object")
    return data


def _scaling(config: dict) -> tuple[int, float]:
    """(r, scaling) from a PEFT LoraConfig, refusing what is not a plain low-rank delta."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidEntryError(f"peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise InvalidEntryError("DoRA adapters are not a plain low-rank delta (use_dora=true)")
    if config.get("alpha_pattern") or config.get("rank_pattern"):
        raise InvalidEntryError("per-module alpha_pattern/rank_pattern is not supported")
    if config.get("fan_in_fan_out"):
        raise InvalidEntryError("fan_in_fan_out=true (Conv1D layers) is not supported")
    if config.get("bias", "none") != "none":
        raise InvalidEntryError(f"bias={config.get('bias')!r}: trained biases are not supported")
    try:
        r = int(config["r"])
        alpha = float(config.get("lora_alpha", r))
    except (KeyError, TypeError, ValueError):
        raise InvalidEntryError("adapter_config.json needs an integer 'r' and a numeric 'lora_alpha'") from None
    if r < 1 or not math.isfinite(alpha):
        raise InvalidEntryError(f"bad r={r} / lora_alpha={alpha}")
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return r, scaling


def _read_factors(path: Path, r: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise InvalidEntryError(f"missing {path.name}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise InvalidEntryError(f"{path.name} is unreadable ({exc})") from None
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _FACTOR_KEY.match(key)
        if match is None:
            raise InvalidEntryError(f"unexpected tensor {key!r} in {path.name} (only plain LoRA A/B factors)")
        halves.setdefault(match["module"], {})[match["which"]] = value
    if not halves:
        raise InvalidEntryError(f"{path.name} holds no LoRA factors")
    factors = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise InvalidEntryError(f"{module}: lora_A and lora_B must both be present")
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise InvalidEntryError(f"{module}: factor shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit r={r}")
        if not (a.is_floating_point() and b.is_floating_point()):
            raise InvalidEntryError(f"{module}: factors must be floating point")
        a, b = a.float().contiguous(), b.float().contiguous()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise InvalidEntryError(f"{module}: factors contain NaN or inf")
        factors[module] = (a, b)
    return factors


def _read_centroid(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InvalidEntryError(f"missing centroid file {path.name}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if CENTROID_KEY not in data.files:
                raise InvalidEntryError(f"{path.name} has no {CENTROID_KEY!r}")
            centroid = np.asarray(data[CENTROID_KEY])
    except InvalidEntryError:
        raise
    except Exception as exc:  # numpy raises many types for a damaged npz
        raise InvalidEntryError(f"{path.name} is unreadable ({exc})") from None
    if centroid.ndim == 2 and centroid.shape[0] == 1:
        centroid = centroid[0]
    if centroid.ndim != 1 or centroid.size == 0 or not np.issubdtype(centroid.dtype, np.number):
        raise InvalidEntryError(f"centroid must be (D,) or (1,D) numbers, got {centroid.shape} {centroid.dtype}")
    centroid = centroid.astype(np.float32)
    if not np.all(np.isfinite(centroid)):
        raise InvalidEntryError("centroid contains NaN or inf")
    centroid.setflags(write=False)
    return centroid


def _check_against_model(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], model) -> None:
    for module, (a, b) in factors.items():
        try:
            target = model.get_submodule(module)
        except AttributeError:
            raise InvalidEntryError(f"target {module} does not exist in the model") from None
        weight = getattr(target, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise InvalidEntryError(f"target {module} is not a Linear layer")
        if (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise InvalidEntryError(
                f"{module}: LoRA delta would be {b.shape[0]}x{a.shape[1]}, the weight is "
                f"{weight.shape[0]}x{weight.shape[1]}")


def read_adapter(directory: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float, bool]:
    """(factors, lora_alpha, use_rslora) of a plain PEFT LoRA folder (adapter_config.json +
    adapter_model.safetensors), validated like a library entry's; raises InvalidEntryError."""
    directory = Path(directory)
    config = _read_json(directory / CONFIG_FILE)
    r, _ = _scaling(config)
    return _read_factors(directory / WEIGHTS_FILE, r), float(config.get("lora_alpha", r)), bool(config.get("use_rslora"))


def load_entry(directory: Path, *, navigator_dim: int | None = None, navigator_id: str | None = None,
               model=None) -> AdapterEntry:
    """Read and validate one entry completely; raises InvalidEntryError with the reason."""
    directory = Path(directory)
    name = directory.name
    config = _read_json(directory / CONFIG_FILE)
    r, scaling = _scaling(config)
    metadata_path = directory / METADATA_FILE
    official = not metadata_path.exists()
    metadata = {} if official else _read_json(metadata_path)
    centroid = _read_centroid(directory / statistics_file(name))
    dim = metadata.get("embedding_dim")
    if dim is not None and dim != centroid.shape[0]:
        raise InvalidEntryError(f"metadata says embedding_dim {dim}, the centroid has {centroid.shape[0]}")
    if navigator_dim is not None and centroid.shape[0] != navigator_dim:
        raise InvalidEntryError(f"centroid has dimension {centroid.shape[0]}, the navigator produces {navigator_dim}")
    entry_navigator = metadata.get("navigator")
    if navigator_id is not None and entry_navigator is not None and entry_navigator != navigator_id:
        raise InvalidEntryError(f"centroid was made by navigator {entry_navigator!r}, not {navigator_id!r}")
    factors = _read_factors(directory / WEIGHTS_FILE, r)
    dropped = ()
    if official:
        dropped = tuple(m for m in factors if OFFICIAL_INERT_TARGET.search(m))
        factors = {m: f for m, f in factors.items() if m not in dropped}
        if not factors:
            raise InvalidEntryError("no LoRA factor is left after dropping the inert CLIP q/k/v ones")
    if model is not None:
        _check_against_model(factors, model)
    return AdapterEntry(name=name, factors=MappingProxyType(factors), scaling=scaling, centroid=centroid,
                        metadata=MappingProxyType(dict(metadata)), official_layout=official, rank=r,
                        path=directory, dropped=dropped)


class AdapterLibrary:
    """An immutable snapshot of the usable entries of a library directory."""

    def __init__(self, root: Path | None, entries, skipped=(), *, navigator_dim=None, navigator_id=None,
                 model=None, fingerprint: str = ""):
        self._root = None if root is None else Path(root)
        self._entries = tuple(entries)
        self._skipped = tuple((str(n), str(r)) for n, r in skipped)
        self._open_kwargs = dict(navigator_dim=navigator_dim, navigator_id=navigator_id, model=model)
        dims = {e.centroid.shape[0] for e in self._entries}
        if len(dims) > 1:
            raise ValueError(f"entries have different centroid dimensions {sorted(dims)}")
        self._dim = dims.pop() if dims else navigator_dim
        centroids = np.stack([e.centroid for e in self._entries]).astype(np.float64) if self._entries \
            else np.zeros((0, self._dim or 0))
        centroids.setflags(write=False)
        self._centroids = centroids
        self._fingerprint = fingerprint

    @classmethod
    def open(cls, root, *, navigator_dim: int | None = None, navigator_id: str | None = None,
             model=None) -> "AdapterLibrary":
        """Load every valid entry under `root`; invalid ones go to `.skipped` with a reason."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"adapter library directory {root} does not exist")
        entries, skipped = [], []
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for directory in candidates:
            try:
                entries.append(load_entry(directory, navigator_dim=navigator_dim, navigator_id=navigator_id,
                                          model=model))
            except InvalidEntryError as exc:
                skipped.append((directory.name, str(exc)))
        if navigator_dim is None and entries:
            # Without a navigator to check against, the majority dimension wins.
            common = Counter(e.centroid.shape[0] for e in entries).most_common(1)[0][0]
            for e in [e for e in entries if e.centroid.shape[0] != common]:
                entries.remove(e)
                skipped.append((e.name, f"centroid has dimension {e.centroid.shape[0]}, the library uses {common}"))
        return cls(root, entries, skipped, navigator_dim=navigator_dim, navigator_id=navigator_id, model=model,
                   fingerprint=_fingerprint(root, candidates))

    def reload(self, root=None) -> "AdapterLibrary":
        """A fresh snapshot of the (same or given) directory with the same validation."""
        target = root if root is not None else self._root
        if target is None:
            raise ValueError("this library was not opened from a directory; pass a root to reload")
        return AdapterLibrary.open(target, **self._open_kwargs)

    @property
    def root(self) -> Path | None:
        return self._root

    @property
    def entries(self) -> tuple[AdapterEntry, ...]:
        return self._entries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self._entries)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return list(self._skipped)

    @property
    def centroids(self) -> np.ndarray:
        """(N,D) float64, read-only."""
        return self._centroids

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Changes whenever a file of the library changes (for cache keys)."""
        return self._fingerprint

    @property
    def target_modules(self) -> tuple[str, ...]:
        """Union of the modules any entry adapts, in first-seen order."""
        return tuple(dict.fromkeys(m for e in self._entries for m in e.factors))

    @functools.cached_property
    def median_inter_centroid_distance(self) -> float:
        """Median Euclidean distance between distinct centroids (nan with fewer than 2); computed once
        per snapshot (relative thresholds and scale-free scores read it every frame)."""
        n = len(self._entries)
        if n < 2:
            return float("nan")
        c = self._centroids
        d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)
        return float(np.median(d[np.triu_indices(n, k=1)]))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> AdapterEntry:
        for e in self._entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"AdapterLibrary({self._root}, {len(self)} entries, {len(self._skipped)} skipped)"


def _fingerprint(root: Path, directories) -> str:
    h = hashlib.sha256()
    for directory in directories:
        for f in sorted(p for p in directory.iterdir() if p.is_file()):
            st = f.stat()
            h.update(f"{directory.name}/{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def write_entry(root, name: str, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], centroid,
                *, lora_alpha: float | None = None, use_rslora: bool = False, metadata: Mapping | None = None,
                overwrite: bool = False) -> Path:
    """Write one entry in the official layout (plus our metadata.json when given); the one entry writer.

    The files are what PEFT's save_pretrained and SemLA's statistics script produce, so official
    tools (and PEFT's `PeftModel.from_pretrained`) read them too. The entry is written into a hidden
    sibling first and renamed into place, so a node reloading meanwhile never sees half an entry.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"adapter name {name!r} must be a plain file name")
    if not factors:
        raise ValueError("an entry needs at least one module's LoRA factors")
    ranks = {a.shape[0] for a, _ in factors.values()}
    if len(ranks) != 1:
        raise ValueError(f"all factors must share one rank, got {sorted(ranks)}")
    r = ranks.pop()
    root = Path(root)
    target = root / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"library entry {target} exists (overwrite it explicitly)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        directory = tmp / name
        directory.mkdir()
        config = {
            "peft_type": "LORA", "r": r, "lora_alpha": float(lora_alpha if lora_alpha is not None else 2 * r),
            "lora_dropout": 0.0, "bias": "none", "use_rslora": bool(use_rslora), "use_dora": False,
            "fan_in_fan_out": False,
            "init_lora_weights": True, "inference_mode": True, "target_modules": sorted(factors),
            "alpha_pattern": {}, "rank_pattern": {}, "modules_to_save": None, "task_type": None,
            "base_model_name_or_path": None,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        tensors = {}
        for module, (a, b) in factors.items():
            tensors[f"{KEY_PREFIX}{module}.lora_A.weight"] = a.detach().float().contiguous().cpu()
            tensors[f"{KEY_PREFIX}{module}.lora_B.weight"] = b.detach().float().contiguous().cpu()
        save_file(tensors, str(directory / WEIGHTS_FILE))
        np.savez(directory / statistics_file(name),
                 **{CENTROID_KEY: np.asarray(centroid, dtype=np.float32).reshape(1, -1)})
        if metadata is not None:
            (directory / METADATA_FILE).write_text(json.dumps(dict(metadata), indent=2))
        if target.exists():
            shutil.rmtree(target)
        directory.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
