"""The folder dataset format the evaluation and the adapter trainer read.

    <root>/classes.txt                 one class name per line; line i is train id i
    <root>/<domain>/images/<stem>.png  RGB images (.png, .jpg or .jpeg)
    <root>/<domain>/labels/<stem>.png  single-channel uint8 train ids, 255 = ignore
    <root>/<domain>/classes.txt        optional: overrides the root class list for that domain

Why this layout: it is what Cityscapes-style datasets (ACDC, BDD, Mapillary after the usual
train-id conversion) reduce to with a script of a few lines, it needs no index file, and one
domain folder is also exactly what `semla-library train` needs to make an adapter. Image and
label are matched by file stem; every problem (missing label, size mismatch, id out of range)
is reported with the file name before any model runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .metrics import IGNORE_INDEX

IMAGE_DIR, LABEL_DIR, CLASSES_FILE = "images", "labels", "classes.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """The dataset folder does not follow the format; the message names the file."""


def read_classes(path: Path) -> list[str]:
    names = [line.strip() for line in Path(path).read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DatasetError(f"{path} lists no classes")
    if len(names) >= IGNORE_INDEX:
        raise DatasetError(f"{path} lists {len(names)} classes; train ids must stay below {IGNORE_INDEX}")
    return names


def write_classes(path: Path, names) -> None:
    Path(path).write_text("".join(f"{n}\n" for n in names))


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_label(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I;16", "I"):
            raise DatasetError(f"{path}: labels must be single-channel train ids, got mode {im.mode}")
        label = np.asarray(im)
    if label.max(initial=0) > 255:
        raise DatasetError(f"{path}: label ids above 255")
    return label.astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    domain: str
    stem: str
    image_path: Path
    label_path: Path | None


@dataclass(frozen=True)
class DomainFolder:
    """One domain: its samples (sorted by stem, so sequences replay in file order) and classes."""

    name: str
    path: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def first(self, limit: int | None = None) -> tuple[Sample, ...]:
        """The first `limit` samples in file order (all when None)."""
        return self.samples if limit is None else self.samples[:limit]

    def images(self, limit: int | None = None, skipped: list | None = None) -> Iterator[np.ndarray]:
        """The first `limit` images; an unreadable one is skipped as `pairs` does."""
        for s in self.first(limit):
            image = _readable(s.image_path, read_image, skipped)
            if image is not None:
                yield image

    def pairs(self, limit: int | None = None, skipped: list | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(image HxWx3 uint8, label HxW uint8) of the first `limit` samples, as `labelled` reads them."""
        for _, image, label in self.labelled(limit, skipped):
            yield image, label

    def labelled(self, limit: int | None = None,
                 skipped: list | None = None) -> Iterator[tuple[Sample, np.ndarray, np.ndarray]]:
        """(sample, image, label) of the first `limit` samples, image and label checked against each other and
        the class list. An unreadable file (truncated, corrupt, not an image) is appended to `skipped` as
        (path, reason) and left out, like semla-relabel's unreadable frames; without a list it is an error."""
        for s in self.first(limit):
            if s.label_path is None:
                raise DatasetError(f"{s.image_path}: no label {LABEL_DIR}/{s.stem}.png")
            image = _readable(s.image_path, read_image, skipped)
            label = None if image is None else _readable(s.label_path, read_label, skipped)
            if label is None:
                continue
            if image.shape[:2] != label.shape:
                raise DatasetError(f"{s.label_path}: label is {label.shape}, image is {image.shape[:2]}")
            bad = np.unique(label[(label != IGNORE_INDEX) & (label >= len(self.classes))])
            if bad.size:
                raise DatasetError(f"{s.label_path}: ids {bad[:5].tolist()} are not in the {len(self.classes)} "
                                   f"classes (and not {IGNORE_INDEX})")
            yield s, image, label


def _readable(path: Path, read, skipped: list | None):
    """`read(path)`, or None with (path, reason) appended to `skipped` when the file cannot be decoded."""
    try:
        return read(path)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure costs this file only
        reason = f"{type(exc).__name__}: {exc}"
        if skipped is None:
            raise DatasetError(f"{path}: unreadable ({reason})") from exc
        skipped.append((str(path), reason))
        return None


def no_readable(where, skipped: list) -> DatasetError:
    """The refusal when every file was unreadable: a run over nothing must not look like a result."""
    first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    return DatasetError(f"no readable image in {where} ({len(skipped)} unreadable{first})")


def open_domain(path, classes=None, require_labels: bool = True) -> DomainFolder:
    """A domain folder (`images/` [+ `labels/`]); a bare folder of images also works for centroids."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"domain folder {path} does not exist")
    image_dir = path / IMAGE_DIR if (path / IMAGE_DIR).is_dir() else path
    label_dir = path / LABEL_DIR
    if classes is None:
        for candidate in (path / CLASSES_FILE, path.parent / CLASSES_FILE):
            if candidate.is_file():
                classes = read_classes(candidate)
                break
    elif (path / CLASSES_FILE).is_file():
        classes = read_classes(path / CLASSES_FILE)
    if require_labels and classes is None:
        raise DatasetError(f"no {CLASSES_FILE} in {path} or {path.parent}")
    samples = []
    for image_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label_path = label_dir / f"{image_path.stem}.png"
        if not label_path.is_file():
            if require_labels:
                raise DatasetError(f"{image_path}: missing label {label_path}")
            label_path = None
        samples.append(Sample(path.name, image_path.stem, image_path, label_path))
    if not samples:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    return DomainFolder(path.name, path, tuple(classes or ()), tuple(samples))


def open_dataset(root, domains=None) -> dict[str, DomainFolder]:
    """All (or the named) domain folders under `root`, in the given or sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if domains is None:
        domains = sorted(p.name for p in root.iterdir() if (p / IMAGE_DIR).is_dir())
        if not domains:
            raise DatasetError(f"no domain folders (<domain>/{IMAGE_DIR}/) under {root}")
    out = {}
    for name in domains:
        out[name] = open_domain(root / name)
    class_lists = {tuple(d.classes) for d in out.values()}
    if len(class_lists) > 1:
        raise DatasetError(f"domains under {root} use different class lists; evaluate them separately")
    return out
