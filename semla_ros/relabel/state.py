"""The job folder: everything a relabelling run writes, and what lets a rerun finish an interrupted one.

    <out>/job.json                             what the job is (inputs, engine, settings); a rerun must match
    <out>/<rec>/embeddings/batch-000000.npz    one per embedding batch (index range), written when complete
    <out>/<rec>/masks/<name>.png               class ids (8-bit PNG, 16-bit past 255 classes)
    <out>/segments/<cluster>.json              the cluster is done: all its frames' masks exist
    <out>/clusters.json                        clusters, their fusions and support
    <out>/<rec>/frames.csv                     per frame: stamp, cluster, support, distances
    <out>/<rec>/relabelled/                    the output bag (bag output), renamed into place when complete
    <out>/<rec>/compare.json                   per-image vs per-cluster vs debounced on this recording
    <out>/report.json, report.md

Every file is written under a temporary name and renamed, so an interruption never leaves half a
file: what exists is complete, and the rerun redoes only what is missing.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.output_paths import check_output_folder
from .work import EmbeddedBatch

JOB_FILE = "job.json"
# The job's own files (the layout above), the only ones a restart removes.
JOB_OUTPUTS = (JOB_FILE, "segments", "clusters.json", "report.json", "report.md")
RECORDING_OUTPUTS = ("embeddings", "masks", "per_image_masks", "frames.csv", "relabelled", "relabelled.partial",
                     "compare.json")


class JobMismatch(ValueError):
    """The output folder holds another job's state."""


def safe_child(name: str) -> bool:
    """A recording name from a job.json that names a folder directly below the job folder."""
    return name not in (".", "..") and "/" not in name and "\\" not in name and not name.startswith(".")


def manifest_differences(known, wanted, prefix: str = "") -> list[str]:
    """The dotted names of the settings two manifests disagree on (`state.cluster.scale`), so a refusal
    names the option that changed, not only its group."""
    if isinstance(known, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(known) | set(wanted)):
            out += manifest_differences(known.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    same = json.dumps(known, default=_plain, sort_keys=True) == json.dumps(wanted, default=_plain, sort_keys=True)
    return [] if same else [prefix.rstrip(".")]


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=_plain, allow_nan=True).encode())


def _plain(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass
class FrameTable:
    """A recording's embedded frames in index order, and what could not be read."""

    indices: np.ndarray
    names: list[str]
    sec: np.ndarray
    nanosec: np.ndarray
    log_ns: np.ndarray
    frame_ids: list[str]
    labelled: np.ndarray
    embeddings: np.ndarray
    skipped: list[tuple[int, str]] = field(default_factory=list)
    embed_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.indices)


class JobFolder:
    def __init__(self, root):
        self.root = Path(root)

    # ------------------------------------------------------------------ the job itself
    def claim(self, manifest: dict, restart: bool = False) -> bool:
        """Start or resume the job `manifest` describes here; True when resuming. Another job's
        state is an error naming the settings that differ (or, with `restart`, that job's own files are
        deleted first: nothing else in the folder is touched)."""
        path = self.root / JOB_FILE
        if path.is_file():
            known = json.loads(path.read_text())
            if known == json.loads(json.dumps(manifest, default=_plain)):
                return True
            if not restart:
                differ = ", ".join(manifest_differences(known, manifest)) or "format"
                raise JobMismatch(f"{self.root} holds another relabelling job (differs in: {differ}); "
                                  "use another --out, or --restart to discard that job's results")
            self.discard(known)
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(path, manifest)
        return False

    def outputs(self, recordings) -> list[Path]:
        """Every path a job over `recordings` (their names) writes here: the one list of the job's files,
        so a restart removes exactly what a job wrote and nothing a user put beside it."""
        paths = [self.root / name for name in JOB_OUTPUTS]
        for recording in recordings:
            paths += [self.root / recording / name for name in RECORDING_OUTPUTS]
        return paths

    def discard(self, known: dict) -> None:
        """Delete the job `known` (its job.json) wrote: its files, then the folders it made if empty."""
        recordings = [str(r.get("name", "")) for r in known.get("inputs", []) if isinstance(r, dict)]
        recordings = [r for r in recordings if r and safe_child(r)]
        for path in self.outputs(recordings):
            for victim in (path, path.with_name(f".{path.name}.tmp")):
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                elif victim.exists() or victim.is_symlink():
                    victim.unlink()
        for recording in recordings:
            folder = self.root / recording
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def check_target(self, inputs) -> None:
        """Refuse an output folder that is a file, holds an input, or lies inside one (a rerun would read
        its own outputs as frames, and a restart could remove what it must never touch); and one that
        cannot be written. Checked before any work starts."""
        check_output_folder(self.root, "--out", inputs)

    # ------------------------------------------------------------------ embeddings
    def _batch_dir(self, recording: str) -> Path:
        return self.root / recording / "embeddings"

    def done_batches(self, recording: str) -> set[int]:
        d = self._batch_dir(recording)
        return {int(p.stem.split("-")[1]) for p in d.glob("batch-*.npz")} if d.is_dir() else set()

    def save_batch(self, b: EmbeddedBatch) -> None:
        skipped = b.skipped
        path = self._batch_dir(b.recording) / f"batch-{b.batch:06d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, indices=b.indices, names=np.array(b.names, dtype=str), sec=b.sec, nanosec=b.nanosec,
                     log_ns=b.log_ns, frame_ids=np.array(b.frame_ids, dtype=str), labelled=b.labelled,
                     embeddings=b.embeddings, skipped_indices=np.array([i for i, _ in skipped], np.int64),
                     skipped_reasons=np.array([r for _, r in skipped], dtype=str), seconds=np.float64(b.seconds))
        os.replace(tmp, path)

    def frame_table(self, recording: str, dim: int) -> FrameTable:
        parts = [np.load(p) for p in sorted(self._batch_dir(recording).glob("batch-*.npz"))]
        cat = (lambda key, dtype: np.concatenate([p[key] for p in parts]).astype(dtype) if parts
               else np.zeros(0, dtype))
        table = FrameTable(
            indices=cat("indices", np.int64), names=[str(n) for p in parts for n in p["names"]],
            sec=cat("sec", np.int64), nanosec=cat("nanosec", np.int64), log_ns=cat("log_ns", np.int64),
            frame_ids=[str(n) for p in parts for n in p["frame_ids"]], labelled=cat("labelled", bool),
            embeddings=np.concatenate([p["embeddings"] for p in parts]).astype(np.float32) if parts
            else np.zeros((0, dim), np.float32),
            skipped=[(int(i), str(r)) for p in parts
                     for i, r in zip(p["skipped_indices"], p["skipped_reasons"], strict=True)],
            embed_seconds=float(sum(float(p["seconds"]) for p in parts)))
        order = np.argsort(table.indices, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            raise RuntimeError(f"{self._batch_dir(recording)}: batches overlap or are out of order")
        return table

    # ------------------------------------------------------------------ masks and clusters
    def mask_path(self, recording: str, name: str, kind: str = "masks") -> Path:
        """`kind`: "masks" (the job's output) or "per_image_masks" (the comparison's per-image SemLA)."""
        return self.root / recording / kind / f"{name}.png"

    def save_mask(self, recording: str, name: str, class_ids: np.ndarray, num_classes: int,
                  kind: str = "masks") -> None:
        from PIL import Image

        path = self.mask_path(recording, name, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pixels = class_ids.astype(np.uint8 if num_classes <= 256 else np.uint16)
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, path)

    def load_mask(self, recording: str, name: str, kind: str = "masks") -> np.ndarray:
        from PIL import Image

        with Image.open(self.mask_path(recording, name, kind)) as im:
            return np.asarray(im).astype(np.int64)

    def segment_marker(self, cluster: str) -> Path:
        return self.root / "segments" / f"{cluster}.json"

    def segment_done(self, cluster: str) -> dict | None:
        path = self.segment_marker(cluster)
        return json.loads(path.read_text()) if path.is_file() else None


def nan_to_none(value):
    """JSON-safe floats for reports read by other tools (NaN -> null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
