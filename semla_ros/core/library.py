"""The adapter library on disk: LoRA factors + a domain centroid per entry.

Reads the official SemLA `loradb/` layout as-is:

    <root>/<name>/adapter_config.json        PEFT LoraConfig
    <root>/<name>/adapter_model.safetensors  base_model.model.<module>.lora_{A,B}.weight
    <root>/<name>/<name>_statistics.npz      train_average_embedding (1,D)
    <root>/<name>/metadata.json              optional, ours (navigator id, dim, ...)

Opening validates every entry cheaply but completely enough to retrieve from it and to know it
fits: config, centroid, navigator dimension, and every factor's name, dtype and shape from the
safetensors header, checked against the model's targets - without reading the factors, so memory
grows with the number of adapters fused, not with the library. An entry's factors are read when
a fusion first needs them (plain reads, never memory maps: `adapter_files`), validated then
(finite values) and kept in an LRU cache sized in MB (`FactorCache`, shared with the snapshots
`reload()` makes). A bad entry, found at open or at first use, is skipped with its name and
reason, so one broken adapter cannot take the robot's segmentation down; `semla-library inspect
--deep` reads every factor up front.

A library is an immutable snapshot: `reload()` returns a new one and the old stays usable. The
one thing that changes in a snapshot is the set of entries found unusable at first use: they are
excluded from its retrieval (`index`, `select`) from then on.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import stat
import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, TypeVar

import numpy as np
import torch

from .adapter_files import (
    FileIdentity,
    InvalidEntryError,
    exists,
    read_centroid_file,
    read_json,
    read_json_with_text,
    read_safetensors,
    read_safetensors_header,
)
from .factor_cache import FactorCache
from .retrieval import CentroidIndex, Retrieval, retrieve
from .settings import DEFAULTS

__all__ = ["AdapterEntry", "AdapterLibrary", "InvalidEntryError", "Selection", "load_entry", "read_adapter",
           "statistics_file", "write_entry"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "metadata.json"
CENTROID_KEY = "train_average_embedding"
KEY_PREFIX = "base_model.model."
_FACTOR_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
# CLIP attention q/k/v LoRAs never act in official SemLA (nn.MultiheadAttention reads the raw
# q/k/v_proj_weight parameters), so official-layout adapters must not fuse them.
OFFICIAL_INERT_TARGET = re.compile(r"clip_model\.(visual\.)?transformer\.resblocks\.\d+\.attn\.[qkv]_proj$")
# alpha / r of trained adapters is about 0.5-16 (PEFT's own default is 1); past this bound a
# config is broken (lora_alpha 1e30 fuses, then every mask collapses to one class).
MAX_LORA_SCALING = 1000.0
# The median centroid spacing is computed over all pairs up to this many entries, beyond over all
# pairs among this many entries drawn with a fixed seed (a relative threshold needs no more).
MEDIAN_SAMPLE = 1024
_EMPTY: Mapping[str, object] = MappingProxyType({})
T = TypeVar("T")


def statistics_file(name: str) -> str:
    return f"{name}_statistics.npz"


class _FactorFile(NamedTuple):
    """Where a lazy entry's factors are: the file version validated at open, and the cache they go to."""

    path: str
    identity: FileIdentity
    cache: FactorCache


class AdapterEntry:
    """One adapter: LoRA factors per target module (A [r,in], B [out,r]) and its domain centroid.

    An entry opened from disk reads its factors on first access of `factors`, through its
    library's cache (raising InvalidEntryError when the file is gone, changed or damaged since
    the library was opened); `load()` returns the entry with its factors held in memory, which is
    what a fusion keeps. An entry made from factors in memory holds them from the start.
    """

    __slots__ = ("name", "scaling", "centroid", "_metadata", "official_layout", "rank", "_path", "dropped",
                 "modules", "_factors", "_file")
    _metadata: Mapping[str, object] | bytes | None   # bytes: metadata.json as read, parsed when asked for

    def __init__(self, name: str, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None,
                 scaling: float, centroid, metadata: Mapping[str, object] | bytes, official_layout: bool, rank: int = 0,
                 path: str | os.PathLike[str] | None = None, dropped: tuple[str, ...] = (), *,
                 modules: tuple[str, ...] | None = None, file: _FactorFile | None = None):
        if (factors is None) == (file is None):
            raise ValueError("an entry needs either its factors or the file to read them from")
        self.name = name
        self.scaling = float(scaling)          # alpha / r (alpha / sqrt(r) with rsLoRA)
        centroid = np.array(centroid, dtype=np.float32)   # (D,) float32, read-only
        centroid.setflags(write=False)
        self.centroid = centroid
        if isinstance(metadata, bytes):      # metadata.json as read: parsed when asked for
            self._metadata = metadata or None
        else:
            self._metadata = metadata if isinstance(metadata, MappingProxyType) else MappingProxyType(dict(metadata))
        self.official_layout = official_layout  # True when there is no metadata.json of ours
        self.rank = rank
        self._path = None if path is None else str(path)
        self.dropped = tuple(dropped)           # factors present on disk but not fused (why: see loader)
        self._factors = None if factors is None else MappingProxyType(dict(factors))
        if modules is None:
            if self._factors is None:
                raise ValueError("an entry read from a file needs the names of its modules")
            modules = tuple(self._factors)
        self.modules = tuple(modules)   # target modules, in order
        self._file = file

    @property
    def path(self) -> Path | None:
        return None if self._path is None else Path(self._path)

    @property
    def metadata(self) -> Mapping[str, object]:
        """Our metadata.json (navigator, training, ...); empty for the official layout."""
        if isinstance(self._metadata, bytes):
            return MappingProxyType(json.loads(self._metadata))
        return self._metadata if self._metadata is not None else _EMPTY

    @property
    def lazy(self) -> bool:
        """True when the factors are read from disk on use (not held by this object)."""
        return self._factors is None

    @property
    def cached(self) -> bool:
        """Factors in memory now (held, or in the cache) - using them reads no file."""
        return self._factors is not None or self._cache_key() in self._source().cache

    @property
    def factors(self) -> Mapping[str, tuple[torch.Tensor, torch.Tensor]]:
        """module -> (A, B), float32; read and validated on first use for an entry opened from disk."""
        if self._factors is not None:
            return self._factors
        return self._source().cache.get(self._cache_key(), self._read)

    def load(self) -> "AdapterEntry":
        """This entry with its factors held in memory (itself when it holds them already)."""
        if self._factors is not None:
            return self
        held = AdapterEntry(self.name, self.factors, self.scaling, self.centroid, self._metadata or _EMPTY,
                            self.official_layout, self.rank, self._path, self.dropped, modules=self.modules)
        held.centroid = self.centroid
        return held

    def _source(self) -> _FactorFile:
        """The file a lazy entry reads its factors from (an entry made from factors in memory has none)."""
        if self._file is None:
            raise RuntimeError(f"adapter entry {self.name!r} holds its factors in memory and has no file to read")
        return self._file

    def _cache_key(self) -> tuple[str, FileIdentity]:
        source = self._source()
        return source.path, source.identity

    def _read(self) -> tuple[Mapping[str, tuple[torch.Tensor, torch.Tensor]], int]:
        source = self._source()
        factors = _load_factors(source.path, source.identity, self.rank, self.modules)
        return MappingProxyType(factors), sum(a.nbytes + b.nbytes for a, b in factors.values())

    def __repr__(self) -> str:
        return f"AdapterEntry({self.name!r}, {len(self.modules)} modules, r={self.rank}, scaling={self.scaling:g})"


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
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InvalidEntryError("adapter_config.json needs an integer 'r' and a numeric 'lora_alpha'") from None
    if r < 1 or not math.isfinite(alpha):
        raise InvalidEntryError(f"bad r={r} / lora_alpha={alpha}")
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    if abs(scaling) > MAX_LORA_SCALING:
        raise InvalidEntryError(f"lora_alpha {alpha:g} with r={r} gives a LoRA scaling of {scaling:g}, more than "
                                f"{MAX_LORA_SCALING:g}: not a trained adapter")
    return r, scaling


def _pair(items: Mapping[str, T], shape: Callable[[T], tuple], r: int, filename: str) -> dict[str, tuple[T, T]]:
    """{module: (A, B)} from safetensors keys, checking names, pairs and shapes against r."""
    halves: dict[str, dict[str, T]] = {}
    for key, value in items.items():
        match = _FACTOR_KEY.match(key)
        if match is None:
            raise InvalidEntryError(f"unexpected tensor {key!r} in {filename} (only plain LoRA A/B factors)")
        halves.setdefault(match["module"], {})[match["which"]] = value
    if not halves:
        raise InvalidEntryError(f"{filename} holds no LoRA factors")
    pairs = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise InvalidEntryError(f"{module}: lora_A and lora_B must both be present")
        a, b = shape(pair["A"]), shape(pair["B"])
        if len(a) != 2 or len(b) != 2 or a[0] != r or b[1] != r:
            raise InvalidEntryError(f"{module}: factor shapes A{a} B{b} do not fit r={r}")
        pairs[module] = (pair["A"], pair["B"])
    return pairs


def _load_factors(path: str | os.PathLike[str], identity: FileIdentity, r: int,
                  modules) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The factors of `modules` from the file version `identity`, float32, finite."""
    filename = os.path.basename(path)
    pairs = _pair(read_safetensors(path, identity), lambda t: tuple(t.shape), r, filename)
    factors = {}
    for module in modules:
        if module not in pairs:
            raise InvalidEntryError(f"{filename} has no factors for {module} any more")
        a, b = pairs[module]
        if not (a.is_floating_point() and b.is_floating_point()):
            raise InvalidEntryError(f"{module}: factors must be floating point")
        a, b = a.float().contiguous(), b.float().contiguous()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise InvalidEntryError(f"{module}: factors contain NaN or inf")
        factors[module] = (a, b)
    return factors


def _read_centroid(path: str) -> np.ndarray:
    if not exists(path):
        raise InvalidEntryError(f"missing centroid file {os.path.basename(path)}")
    centroid = read_centroid_file(path, CENTROID_KEY)
    if centroid.ndim == 2 and centroid.shape[0] == 1:
        centroid = centroid[0]
    if centroid.ndim != 1 or centroid.size == 0 or not np.issubdtype(centroid.dtype, np.number):
        raise InvalidEntryError(f"centroid must be (D,) or (1,D) numbers, got {centroid.shape} {centroid.dtype}")
    centroid = centroid.astype(np.float32)
    if not np.all(np.isfinite(centroid)):
        raise InvalidEntryError("centroid contains NaN or inf")
    return centroid


@functools.lru_cache(maxsize=64)
def _layout(header: tuple, r: int, official: bool) -> tuple[tuple[str, ...], tuple, tuple[str, ...]]:
    """(modules, ((module, A shape, B shape), ...), dropped modules) of a safetensors header: memoised,
    like the header itself, so the thousands of entries of a fleet's library share one copy of each."""
    pairs = _pair(dict(header), lambda info: info.shape, r, WEIGHTS_FILE)
    shapes = tuple((m, a.shape, b.shape) for m, (a, b) in pairs.items())
    dropped: tuple[str, ...] = ()
    if official:
        dropped = tuple(m for m, _, _ in shapes if OFFICIAL_INERT_TARGET.search(m))
        shapes = tuple(s for s in shapes if s[0] not in dropped)
        if not shapes:
            raise InvalidEntryError("no LoRA factor is left after dropping the inert CLIP q/k/v ones")
    return tuple(m for m, _, _ in shapes), shapes, dropped


_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model -> layouts known to fit it


def _check_against_model(shapes: tuple, model) -> None:
    fits = _FITS.setdefault(model, set())
    if shapes in fits:
        return
    for module, a, b in shapes:
        try:
            target = model.get_submodule(module)
        except AttributeError:
            raise InvalidEntryError(f"target {module} does not exist in the model") from None
        weight = getattr(target, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise InvalidEntryError(f"target {module} is not a Linear layer")
        if (b[0], a[1]) != tuple(weight.shape):
            raise InvalidEntryError(
                f"{module}: LoRA delta would be {b[0]}x{a[1]}, the weight is {weight.shape[0]}x{weight.shape[1]}")
    fits.add(shapes)


def read_adapter(directory: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float, bool]:
    """(factors, lora_alpha, use_rslora) of a plain PEFT LoRA folder (adapter_config.json +
    adapter_model.safetensors), validated like a library entry's; raises InvalidEntryError."""
    directory = Path(directory)
    config = read_json(directory / CONFIG_FILE)
    r, _ = _scaling(config)
    path = directory / WEIGHTS_FILE
    header, identity = read_safetensors_header(path)
    modules, _, _ = _layout(header, r, False)
    return _load_factors(path, identity, r, modules), float(config.get("lora_alpha", r)), bool(config.get("use_rslora"))


def load_entry(directory: Path, *, navigator_dim: int | None = None, navigator_id: str | None = None,
               model=None, cache: FactorCache | None = None) -> AdapterEntry:
    """Validate one entry without reading its factors (their header is read); raises InvalidEntryError
    with the reason. The factors are read on first use into `cache` (None: a cache of its own)."""
    folder = os.fspath(directory)
    name = os.path.basename(folder)
    config = read_json(os.path.join(folder, CONFIG_FILE))
    r, scaling = _scaling(config)
    metadata_path = os.path.join(folder, METADATA_FILE)
    official = not exists(metadata_path)
    metadata, metadata_text = ({}, b"") if official else read_json_with_text(metadata_path)
    centroid = _read_centroid(os.path.join(folder, statistics_file(name)))
    dim = metadata.get("embedding_dim")
    if dim is not None and dim != centroid.shape[0]:
        raise InvalidEntryError(f"metadata says embedding_dim {dim}, the centroid has {centroid.shape[0]}")
    if navigator_dim is not None and centroid.shape[0] != navigator_dim:
        raise InvalidEntryError(f"centroid has dimension {centroid.shape[0]}, the navigator produces {navigator_dim}")
    entry_navigator = metadata.get("navigator")
    if navigator_id is not None and entry_navigator is not None and entry_navigator != navigator_id:
        raise InvalidEntryError(f"centroid was made by navigator {entry_navigator!r}, not {navigator_id!r}")
    weights = os.path.join(folder, WEIGHTS_FILE)
    header, identity = read_safetensors_header(weights)
    modules, shapes, dropped = _layout(header, r, official)
    if model is not None:
        _check_against_model(shapes, model)
    file = _FactorFile(weights, identity, cache if cache is not None else FactorCache(DEFAULTS.adapter_cache_mb))
    return AdapterEntry(name, None, scaling, centroid, metadata_text, official, r, folder, dropped, modules=modules,
                        file=file)


@dataclass(frozen=True)
class Selection:
    """A retrieval whose entries' factors are in memory, and the entries skipped to get there."""

    retrieval: Retrieval
    entries: tuple[AdapterEntry, ...]         # held (`load()`ed), in retrieval order
    skipped: tuple[tuple[str, str], ...] = ()  # (name, reason) found unusable by this selection


class AdapterLibrary:
    """An immutable snapshot of the usable entries of a library directory."""

    def __init__(self, root: Path | None, entries, skipped=(), *, navigator_dim=None, navigator_id=None,
                 model=None, fingerprint: str = "", cache: FactorCache | None = None,
                 centroids: np.ndarray | None = None):
        """`centroids`: the entries' centroids as the rows of one (N,D) float32 matrix, when the caller
        holds them so (`open` does); otherwise they are stacked here."""
        self._root = None if root is None else Path(root)
        self._entries = tuple(entries)
        self._skipped = tuple((str(n), str(r)) for n, r in skipped)
        self._open_kwargs = dict(navigator_dim=navigator_dim, navigator_id=navigator_id, model=model)
        dims = {e.centroid.shape[0] for e in self._entries}
        if len(dims) > 1:
            raise ValueError(f"entries have different centroid dimensions {sorted(dims)}")
        self._dim = dims.pop() if dims else navigator_dim
        if centroids is not None:
            matrix = centroids
        else:
            matrix = np.stack([e.centroid for e in self._entries]) if self._entries \
                else np.zeros((0, self._dim or 0), np.float32)
        matrix.setflags(write=False)
        self._index = CentroidIndex(matrix)
        self._rows = {e.name: i for i, e in enumerate(self._entries)}
        self._names = tuple(self._rows)
        if cache is None:
            cache = next((e._file.cache for e in self._entries if e._file is not None), None)
        self._cache = cache if cache is not None else FactorCache(DEFAULTS.adapter_cache_mb)
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._fingerprint = fingerprint

    @classmethod
    def open(cls, root, *, navigator_dim: int | None = None, navigator_id: str | None = None,
             model=None, cache: FactorCache | None = None) -> "AdapterLibrary":
        """Validate every entry under `root` (cheaply: no factor is read); invalid ones go to
        `.skipped` with a reason. `cache`: where factors go when used (None: a new one)."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"adapter library directory {root} does not exist")
        try:
            children = sorted((c.name, c.path) for c in os.scandir(root) if not c.name.startswith("."))
        except OSError as exc:
            raise OSError(f"adapter library directory {root} cannot be listed ({exc.strerror})") from None
        cache = cache if cache is not None else FactorCache(DEFAULTS.adapter_cache_mb)
        entries: list[AdapterEntry] = []
        skipped: list[tuple[str, str]] = []
        candidates: list[str] = []
        # the centroids, written into one matrix as entries load (no copies left behind)
        rows: np.ndarray | None = None
        in_rows = True
        for name, path in children:
            try:
                if not stat.S_ISDIR(os.stat(path).st_mode):
                    continue   # files beside the entries (README.md, ...) are not entries
            except OSError as exc:   # a symlink that loops or points nowhere
                skipped.append((name, f"entry cannot be read ({exc.strerror})"))
                continue
            candidates.append(path)
            try:
                entry = load_entry(path, navigator_dim=navigator_dim, navigator_id=navigator_id, model=model,
                                   cache=cache)
            except InvalidEntryError as exc:
                skipped.append((name, str(exc)))
                continue
            if rows is None:
                rows = np.empty((len(children), entry.centroid.shape[0]), np.float32)
            if entry.centroid.shape == rows.shape[1:]:
                row = rows[len(entries)]
                row[:] = entry.centroid
                row.setflags(write=False)
                entry.centroid = row
            else:
                in_rows = False      # mixed dimensions: the library stacks what is left
            entries.append(entry)
        if navigator_dim is None and entries:
            # Without a navigator to check against, the majority dimension wins.
            common = Counter(e.centroid.shape[0] for e in entries).most_common(1)[0][0]
            for e in [e for e in entries if e.centroid.shape[0] != common]:
                entries.remove(e)
                skipped.append((e.name, f"centroid has dimension {e.centroid.shape[0]}, the library uses {common}"))
        centroids = rows[:len(entries)] if in_rows and rows is not None else None
        return cls(root, entries, skipped, navigator_dim=navigator_dim, navigator_id=navigator_id, model=model,
                   fingerprint=_fingerprint(candidates), cache=cache, centroids=centroids)

    def reload(self, root=None) -> "AdapterLibrary":
        """A fresh snapshot of the (same or given) directory with the same validation and cache."""
        target = root if root is not None else self._root
        if target is None:
            raise ValueError("this library was not opened from a directory; pass a root to reload")
        return AdapterLibrary.open(target, **self._open_kwargs, cache=self._cache)

    @property
    def root(self) -> Path | None:
        return self._root

    @property
    def entries(self) -> tuple[AdapterEntry, ...]:
        return self._entries

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(name, reason) of the entries refused when the library was opened."""
        return list(self._skipped)

    @property
    def failed(self) -> list[tuple[str, str]]:
        """(name, reason) of the entries found unusable at first use (excluded from retrieval since)."""
        with self._lock:
            return list(self._failed.items())

    @property
    def cache(self) -> FactorCache:
        return self._cache

    @property
    def index(self) -> CentroidIndex:
        """The centroids for `retrieve` (fast at any size), without the entries found unusable."""
        return self._index

    @functools.cached_property
    def centroids(self) -> np.ndarray:
        """(N,D) float64, read-only (made on first use; retrieval uses `index`)."""
        c = self._index._rows.astype(np.float64)
        c.setflags(write=False)
        return c

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Changes whenever a file of the library changes (for cache keys)."""
        return self._fingerprint

    @functools.cached_property
    def target_modules(self) -> tuple[str, ...]:
        """Union of the modules any entry adapts, in first-seen order."""
        seen: dict[str, None] = {}
        for modules in dict.fromkeys(e.modules for e in self._entries):
            seen.update(dict.fromkeys(modules))
        return tuple(seen)

    @functools.cached_property
    def median_inter_centroid_distance(self) -> float:
        """Median Euclidean distance between distinct centroids (nan with fewer than 2); computed once
        per snapshot (relative thresholds and scale-free scores read it every frame). Over all pairs
        up to MEDIAN_SAMPLE entries, beyond over all pairs of MEDIAN_SAMPLE entries (fixed seed)."""
        c = self._index._rows
        n = len(c)
        if n < 2:
            return float("nan")
        if n > MEDIAN_SAMPLE:
            c = c[np.sort(np.random.default_rng(0).choice(n, MEDIAN_SAMPLE, replace=False))]
            n = MEDIAN_SAMPLE
        c = c.astype(np.float64)
        sq = np.einsum("ij,ij->i", c, c)
        upper = np.triu_indices(n, k=1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * (c @ c.T))[upper]
        return float(np.sqrt(np.median(np.maximum(d2, 0.0))))

    # ------------------------------------------------------------------ using entries
    def select(self, query, top_k: int = DEFAULTS.top_k, temperature: float = DEFAULTS.temperature,
               metric: str = DEFAULTS.metric, check: Callable[[AdapterEntry], None] | None = None) -> Selection:
        """Retrieve the top-K for `query` with their factors in memory. An entry whose factors cannot be
        read, or that `check` (ValueError) refuses, is skipped with its reason and excluded from this
        snapshot's retrieval; the retrieval then runs again without it, as if it were not in the library.
        ValueError when no usable entry is left."""
        skipped: list[tuple[str, str]] = []
        while True:
            r = retrieve(query, self._index, top_k, temperature, metric)
            if not len(r.indices):
                found = f" ({'; '.join(f'{n}: {why}' for n, why in skipped)})" if skipped else ""
                raise ValueError(f"no usable adapter is left in the library{found}")
            held, bad = [], []
            for row in r.indices:
                entry = self._entries[row]
                try:
                    loaded = entry.load()
                    if check is not None:
                        check(loaded)
                except ValueError as exc:       # InvalidEntryError included
                    bad.append((int(row), str(exc)))
                    continue
                held.append(loaded)
            if not bad:
                return Selection(r, tuple(held), tuple(skipped))
            self._exclude(bad)
            skipped += [(self._entries[row].name, why) for row, why in bad]

    def prefetch(self, rows) -> int:
        """Read the factors of these entries into the cache (the adaptation worker does this while a
        shift is being confirmed, so the swap finds them there); returns how many were read."""
        read, bad = 0, []
        for row in rows:
            entry = self._entries[int(row)]
            if entry.cached or entry.name in self._failed:
                continue
            try:
                _ = entry.factors   # reads them into the cache (validating them)
            except InvalidEntryError as exc:
                bad.append((int(row), str(exc)))
                continue
            read += 1
        if bad:
            self._exclude(bad)
        return read

    def _exclude(self, bad: list[tuple[int, str]]) -> None:
        with self._lock:
            for row, why in bad:
                self._failed[self._entries[row].name] = why
            self._index = self._index.excluding(row for row, _ in bad)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> AdapterEntry:
        return self._entries[self._rows[name]]

    def __repr__(self) -> str:
        return f"AdapterLibrary({self._root}, {len(self)} entries, {len(self._skipped)} skipped)"


def _fingerprint(directories) -> str:
    """Hash of every entry file's size and mtime (a file that cannot be listed counts by its error)."""
    h = hashlib.sha256()
    for directory in directories:
        name = os.path.basename(directory)
        try:
            for f in sorted(os.scandir(directory), key=lambda f: f.name):
                st = f.stat(follow_symlinks=False)
                h.update(f"{name}/{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError as exc:
            h.update(f"{name}:error {exc.errno};".encode())
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
        # the keyword is CENTROID_KEY, spelled out: a ** dict could also fill savez's allow_pickle
        np.savez(directory / statistics_file(name),
                 train_average_embedding=np.asarray(centroid, dtype=np.float32).reshape(1, -1))
        if metadata is not None:
            (directory / METADATA_FILE).write_text(json.dumps(dict(metadata), indent=2))
        if target.exists():
            shutil.rmtree(target)
        directory.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
