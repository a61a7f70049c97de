"""Reading a library entry's files without trusting them.

Why a module of its own: an adapter library is edited by operators while the robot runs (entries
copied over, files truncated, a FIFO or a directory where a file should be). Every read of an
entry file goes through here, so each one is a regular file checked before it is opened (a FIFO
or a device never blocks a read: `stat` first, then `O_NONBLOCK` and `fstat` against a swap in
between), read with plain reads into memory (never memory-mapped: a file truncated under a mapping
kills the process with SIGBUS), bounded in size, and every failure is an `InvalidEntryError`
naming the file and why.

The safetensors header (8-byte little-endian length + JSON: names, dtypes, shapes, offsets) is
read on its own, so opening a library checks every factor's shape without reading the factors.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import stat
from typing import NamedTuple, Union

MAX_JSON_BYTES = 4 << 20          # adapter_config.json / metadata.json (PEFT writes ~1 KB)
MAX_CENTROID_BYTES = 64 << 20     # <name>_statistics.npz (a (1, D) float32 array)
MAX_HEADER_BYTES = 16 << 20       # safetensors header (ViT-L/14's 214 targets: ~60 KB)
MAX_WEIGHTS_BYTES = 16 << 30      # adapter_model.safetensors
PathLike = Union[str, "os.PathLike[str]"]
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class InvalidEntryError(ValueError):
    """One library entry cannot be used; the message says why."""


class FileIdentity(NamedTuple):   # a tuple: one per entry of a library of thousands
    """Which file version was read: a file replaced or rewritten since has another identity."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TensorInfo(NamedTuple):   # a tuple: headers of thousands of entries are hashed as memo keys
    dtype: str
    shape: tuple[int, ...]


def _name(path: PathLike) -> str:
    return os.path.basename(os.fspath(path))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_regular(path: PathLike, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InvalidEntryError(f"{_name(path)} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise InvalidEntryError(f"{_name(path)} is {st.st_size} bytes, more than the {limit} this file may have")


def exists(path: PathLike) -> bool:
    """Whether anything (even a dangling or looping symlink) is at `path`; other errors are the entry's."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise InvalidEntryError(f"{_name(path)} cannot be checked ({_os_reason(exc)})") from None
    return True


def open_regular(path: PathLike, limit: int) -> tuple[io.FileIO, os.stat_result]:
    """An open regular file (checked before and after opening) and its stat; InvalidEntryError otherwise."""
    try:
        _check_regular(path, os.stat(path), limit)     # never open a FIFO or a device
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InvalidEntryError(f"missing {_name(path)}") from None
    except OSError as exc:   # EACCES, ELOOP (symlink loop), ENOTDIR, EIO, ...
        raise InvalidEntryError(f"{_name(path)} cannot be opened ({_os_reason(exc)})") from None
    f = io.FileIO(fd, "rb", closefd=True)
    try:
        st = os.fstat(fd)
        _check_regular(path, st, limit)                 # replaced between stat and open
    except BaseException:
        f.close()
        raise
    return f, st


def _read(f: io.FileIO, path: PathLike, n: int) -> bytes:
    """Up to `n` bytes (fewer only at the end of the file), with plain reads."""
    chunks, total = [], 0
    while total < n:
        try:
            chunk = f.read(n - total)
        except OSError as exc:
            raise InvalidEntryError(f"{_name(path)} cannot be read ({_os_reason(exc)})") from None
        if chunk is None:   # only a non-regular file can say "try again"
            raise InvalidEntryError(f"{_name(path)} would block: not a regular file")
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_file(path: PathLike, limit: int, expected: FileIdentity | None = None) -> tuple[bytes, FileIdentity]:
    """The whole file in memory and its identity; with `expected`, refuses any other version of it."""
    f, st = open_regular(path, limit)
    with f:
        identity = FileIdentity.of(st)
        if expected is not None and identity != expected:
            raise InvalidEntryError(f"{_name(path)} changed on disk since the library was opened "
                                    "(reload the library to use the new file)")
        data = _read(f, path, st.st_size + 1)   # one byte past the size tells a file that grew
        if len(data) != st.st_size:
            raise InvalidEntryError(f"{_name(path)} changed size while being read ({st.st_size} -> {len(data)} bytes)")
        if FileIdentity.of(os.fstat(f.fileno())) != identity:
            raise InvalidEntryError(f"{_name(path)} changed while being read")
    return data, identity


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEntryError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidEntryError(f"{what} must hold a JSON object")
    return value


def read_json(path: PathLike) -> dict:
    return read_json_with_text(path)[0]


def read_json_with_text(path: PathLike) -> tuple[dict, bytes]:
    """The JSON object in the file and the file's bytes (several times smaller to keep than the dict)."""
    data, _ = read_file(path, MAX_JSON_BYTES)
    return _json_object(data, _name(path)), data


def read_centroid_file(path: PathLike, key: str):
    """The array `key` of an .npz file, read from memory (np.load never opens the path itself)."""
    import numpy as np

    data, _ = read_file(path, MAX_CENTROID_BYTES)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if key not in npz.files:
                raise InvalidEntryError(f"{_name(path)} has no {key!r}")
            return np.asarray(npz[key])
    except InvalidEntryError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types for a damaged npz
        raise InvalidEntryError(f"{_name(path)} is unreadable ({exc})") from None


def read_safetensors_header(path: PathLike) -> tuple[tuple[tuple[str, TensorInfo], ...], FileIdentity]:
    """((name, dtype and shape), ...) of a safetensors file from its header alone, validated like the
    format's own loader does (float dtypes, offsets that cover the data exactly), and its identity."""
    f, st = open_regular(path, MAX_WEIGHTS_BYTES)
    with f:
        identity = FileIdentity.of(st)
        if st.st_size < 8:
            raise InvalidEntryError(f"{_name(path)} is unreadable (only {st.st_size} bytes)")
        length = int.from_bytes(_read(f, path, 8), "little")
        if length > min(MAX_HEADER_BYTES, st.st_size - 8):
            raise InvalidEntryError(f"{_name(path)} is unreadable (header of {length} bytes in a "
                                    f"{st.st_size}-byte file)")
        raw = _read(f, path, length)
    if len(raw) != length:
        raise InvalidEntryError(f"{_name(path)} is unreadable (truncated header)")
    return _parse_header(raw, st.st_size - 8 - length, _name(path)), identity


@functools.lru_cache(maxsize=64)
def _parse_header(raw: bytes, data_size: int, filename: str) -> tuple[tuple[str, TensorInfo], ...]:
    """Memoised: adapters trained alike have byte-identical headers, and a fleet's library holds
    thousands of them (parsing a ViT-B header is ~1 ms, hashing it ~20 us)."""
    header = _json_object(raw, f"the header of {filename}")
    header.pop("__metadata__", None)
    tensors, spans = [], []
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            if not all(type(v) is int and v >= 0 for v in (*shape, start, end)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise InvalidEntryError(f"{filename} is unreadable (bad header record for {name!r})") from None
        if dtype not in FLOAT_DTYPES:
            raise InvalidEntryError(f"{name}: dtype {dtype} is not a floating-point type")
        if end - start != math.prod(shape) * FLOAT_DTYPES[dtype]:
            raise InvalidEntryError(f"{filename} is unreadable ({name}: offsets do not match its shape)")
        tensors.append((name, TensorInfo(dtype, shape)))
        spans.append((start, end))
    covered = 0
    for start, end in sorted(spans):
        if start != covered:
            raise InvalidEntryError(f"{filename} is unreadable (tensor data overlaps or leaves gaps)")
        covered = end
    if covered != data_size:
        raise InvalidEntryError(f"{filename} is unreadable ({data_size} bytes of data, the header describes "
                                f"{covered}: truncated or padded)")
    return tuple(tensors)


def read_safetensors(path: PathLike, expected: FileIdentity):
    """Every tensor of the file version `expected`, from a plain read (owned memory, no mapping)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data, _ = read_file(path, MAX_WEIGHTS_BYTES, expected)
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise InvalidEntryError(f"{_name(path)} is unreadable ({exc})") from None
