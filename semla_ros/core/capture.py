"""Frames of a suspected library gap, saved to disk ready to label.

    <root>/images/<name>.png        the frame (RGB)
    <root>/embeddings/<name>.npy    its navigator embedding, float32 (D,)
    <root>/captures.jsonl           one JSON object per frame: name, distances, nearest adapters, status, ...
    <root>/capture.json             navigator id (embeddings of another navigator do not compare)
    <root>/classes.txt              the vocabulary in force when capturing started

Why this layout: it is a domain folder of the evaluation's dataset format (`images/` +
`classes.txt`), so adding `labels/<name>.png` makes it trainable by `semla-library train` as it
is, and `semla-library gaps` reads the embeddings without running a model. The size bound counts
the frames already in the folder (earlier runs too), so a robot left running never fills its
disk; every file is written under a temporary name and renamed, so a crash leaves no half frame.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

IMAGES, EMBEDDINGS, RECORDS, INFO, CLASSES = "images", "embeddings", "captures.jsonl", "capture.json", "classes.txt"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class GapCapture:
    def __init__(self, root, max_frames: int, classes=(), navigator_id: str | None = None):
        self.root = Path(root)
        self.max_frames = int(max_frames)
        (self.root / IMAGES).mkdir(parents=True, exist_ok=True)
        (self.root / EMBEDDINGS).mkdir(parents=True, exist_ok=True)
        info_path = self.root / INFO
        if navigator_id is not None:
            if info_path.is_file():
                known = json.loads(info_path.read_text()).get("navigator")
                if known not in (None, navigator_id):
                    raise ValueError(f"capture folder {self.root} holds embeddings of navigator {known!r}, "
                                     f"not {navigator_id!r}: use another capture_dir")
            else:
                _write_atomic(info_path, json.dumps({"navigator": navigator_id}).encode())
        if classes and not (self.root / CLASSES).is_file():
            _write_atomic(self.root / CLASSES, "".join(f"{c}\n" for c in classes).encode())
        self._count = sum(1 for p in (self.root / IMAGES).iterdir() if p.suffix == ".png")

    @property
    def count(self) -> int:
        """Frames in the folder (this run's and earlier ones)."""
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self.max_frames

    def save(self, name: str, image: np.ndarray, embedding, record: dict) -> bool:
        """Write one frame with its embedding and record; False when full or `name` is taken."""
        from PIL import Image

        if not _NAME.fullmatch(name):
            raise ValueError(f"capture name {name!r} must be a plain file name")
        png = self.root / IMAGES / f"{name}.png"
        if self.full or png.exists():
            return False
        emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
        tmp = self.root / EMBEDDINGS / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, self.root / EMBEDDINGS / f"{name}.npy")
        tmp = self.root / IMAGES / f".{name}.png.tmp"
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
        os.replace(tmp, png)
        line = {"name": name, "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        with open(self.root / RECORDS, "a") as f:
            f.write(json.dumps(line, default=_plain) + "\n")
        self._count += 1
        return True


def _plain(value):
    """JSON for numpy scalars (and nan stays NaN, which Python's json reads back)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_capture(root) -> tuple[list[str], np.ndarray, list[dict], dict]:
    """(names, embeddings (N,D) float64, records, info) of a capture folder, in name order.

    A frame counts when its image and its embedding both exist; records are matched by name
    (a frame whose record line is missing still counts, with an empty record)."""
    root = Path(root)
    if not (root / IMAGES).is_dir() or not (root / EMBEDDINGS).is_dir():
        raise FileNotFoundError(f"{root} is not a capture folder (no {IMAGES}/ and {EMBEDDINGS}/)")
    names = sorted(p.stem for p in (root / IMAGES).glob("*.png")
                   if (root / EMBEDDINGS / f"{p.stem}.npy").is_file())
    records = {}
    if (root / RECORDS).is_file():
        for line in (root / RECORDS).read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue   # a line cut by a crash; its frame still counts
            if isinstance(rec, dict) and "name" in rec:
                records[rec["name"]] = rec
    embeddings = np.stack([np.load(root / EMBEDDINGS / f"{n}.npy").astype(np.float64) for n in names]) \
        if names else np.zeros((0, 0))
    info = json.loads((root / INFO).read_text()) if (root / INFO).is_file() else {}
    return names, embeddings, [records.get(n, {"name": n}) for n in names], info
