"""Recorded drives as frames: a ROS 2 bag (MCAP or sqlite3, read with `rosbags`, no ROS install) or an
image folder.

A frame's `index` is its position among the recording's image messages (or files) in read order,
counting unreadable ones too, so indices stay the same however often (and wherever) the recording
is read: they key the job's state on disk and its batches. A message that cannot be deserialised or
decoded comes out as `Skipped` with the reason; the job counts it and goes on.

Recordings are small picklable descriptions (the bag is opened inside `frames()`), so the same
object travels to Ray workers.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.frames import BadFrame, compressed_to_rgb, image_pixels, image_to_rgb

IMAGE_TYPES = {"sensor_msgs/msg/Image": image_to_rgb, "sensor_msgs/msg/CompressedImage": compressed_to_rgb}


class RecordingError(ValueError):
    """A recording that cannot be relabelled at all (missing, unreadable, no such topic); says why."""


@dataclass(frozen=True)
class Frame:
    index: int
    name: str               # file stem of its outputs (masks/<name>.png)
    sec: int                # header stamp: outputs are stamped like their source frame
    nanosec: int
    frame_id: str
    log_ns: int             # when the bag recorded it (outputs are written at the same bag time)
    image: np.ndarray       # HxWx3 uint8 RGB
    label: np.ndarray | None = None  # HxW uint8 train ids where the recording has ground truth

    @property
    def stamp_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass(frozen=True)
class Skipped:
    index: int
    reason: str


def safe_name(name: str) -> str:
    """A recording's name as a plain folder name (its outputs go to <out>/<name>/)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "recording"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def _fingerprint(files) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class BagRecording:
    """The image topic (raw or compressed) of a rosbag2 directory or a single .mcap / .db3 file."""

    kind = "bag"

    def __init__(self, path, topic: str | None = None, labels_topic: str | None = None, name: str | None = None):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"recording {self.path} does not exist")
        try:
            with Reader(self.path) as reader:
                topics = {t: (info.msgtype, info.msgcount) for t, info in reader.topics.items()}
        except Exception as exc:  # rosbags raises many types for a damaged bag
            raise RecordingError(f"{self.path} is not a readable rosbag2 bag ({type(exc).__name__}: {exc})") from None
        images = sorted(t for t, (msgtype, _) in topics.items() if msgtype in IMAGE_TYPES)
        if topic is None:
            if len(images) != 1:
                raise RecordingError(f"{self.path}: choose the image topic with --topic; image topics here: "
                                     f"{images or 'none'}")
            topic = images[0]
        if topic not in topics:
            raise RecordingError(f"{self.path} has no topic {topic!r}; image topics here: {images or 'none'} "
                                 f"(all topics: {sorted(topics)})")
        if topics[topic][0] not in IMAGE_TYPES:
            raise RecordingError(f"{self.path}: topic {topic!r} carries {topics[topic][0]}, not "
                                 f"sensor_msgs/msg/Image or CompressedImage")
        if labels_topic is not None and topics.get(labels_topic, ("",))[0] != "sensor_msgs/msg/Image":
            raise RecordingError(f"{self.path}: labels topic {labels_topic!r} is not a sensor_msgs/msg/Image topic "
                                 f"here; image topics: {images}")
        self.topic, self.labels_topic = topic, labels_topic
        self.msgtype, self.count = topics[topic]
        if self.count == 0:
            raise RecordingError(f"nothing to relabel in {self.path}: no message on {topic!r}")
        self.name = name or safe_name(self.path.stem)
        files = [self.path] if self.path.is_file() else [p for p in self.path.iterdir() if p.is_file()]
        self.fingerprint = _fingerprint(files)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "topic": self.topic,
                "labels_topic": self.labels_topic, "messages": self.count, "fingerprint": self.fingerprint}

    def frames(self, skip: Callable[[int], bool] | None = None) -> Iterator[Frame | Skipped]:
        from rosbags.rosbag2 import Reader

        store = _typestore()
        decode = IMAGE_TYPES[self.msgtype]
        with Reader(self.path) as reader:
            labels = self._labels(reader, store) if self.labels_topic else {}
            connections = [c for c in reader.connections if c.topic == self.topic]
            for index, (connection, log_ns, raw) in enumerate(reader.messages(connections=connections)):
                if skip is not None and skip(index):
                    continue
                try:
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                    image = decode(msg)
                    stamp = msg.header.stamp
                    key = (int(stamp.sec), int(stamp.nanosec))
                    label = None
                    if key in labels:
                        label = image_pixels(store.deserialize_cdr(labels[key], "sensor_msgs/msg/Image"))
                        if label.shape != image.shape[:2] or label.dtype != np.uint8:
                            raise BadFrame("bad_length",
                                           f"label {label.shape} {label.dtype} does not fit image {image.shape}")
                except Exception as exc:  # a corrupt message costs this frame only
                    yield Skipped(index, f"{type(exc).__name__}: {exc}")
                    continue
                yield Frame(index, f"{index:06d}", key[0], key[1], str(msg.header.frame_id), int(log_ns), image, label)

    def _labels(self, reader, store) -> dict:
        """Raw label messages by header stamp (evaluation bags: the ground truth of each frame)."""
        out = {}
        connections = [c for c in reader.connections if c.topic == self.labels_topic]
        for connection, _, raw in reader.messages(connections=connections):
            try:
                stamp = store.deserialize_cdr(raw, connection.msgtype).header.stamp
            except Exception:
                continue  # a corrupt label only costs its frame's score
            out[(int(stamp.sec), int(stamp.nanosec))] = raw
        return out


class FolderRecording:
    """Images of a folder (sorted by name; `images/` + optional `labels/` of the dataset format, or bare).

    Frames are stamped `index / rate_hz` seconds: the node's debounced policy is replayed at that rate.
    """

    kind = "folder"

    def __init__(self, path, rate_hz: float = 10.0, name: str | None = None):
        from ..evaluation.dataset import DatasetError, open_domain

        self.path = Path(path)
        if not rate_hz > 0:
            raise RecordingError(f"rate_hz must be > 0, got {rate_hz}")
        try:
            self.folder = open_domain(self.path, require_labels=False)
        except DatasetError as exc:
            raise RecordingError(str(exc)) from None
        self.rate_hz = float(rate_hz)
        self.count = len(self.folder)
        self.name = name or safe_name(self.path.name)
        self.topic = self.labels_topic = None
        samples = self.folder.samples
        files = [s.image_path for s in samples] + [s.label_path for s in samples if s.label_path]
        self.fingerprint = _fingerprint(files)

    @property
    def classes(self) -> tuple[str, ...]:
        """The folder's classes.txt (empty when it has none)."""
        return self.folder.classes

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "rate_hz": self.rate_hz,
                "images": self.count, "fingerprint": self.fingerprint}

    def frames(self, skip: Callable[[int], bool] | None = None) -> Iterator[Frame | Skipped]:
        from ..evaluation.dataset import read_image, read_label

        for index, sample in enumerate(self.folder.samples):
            if skip is not None and skip(index):
                continue
            try:
                image = read_image(sample.image_path)
                label = read_label(sample.label_path) if sample.label_path is not None else None
                if label is not None and label.shape != image.shape[:2]:
                    raise BadFrame("bad_length", f"label {label.shape} does not fit image {image.shape[:2]}")
            except Exception as exc:  # an unreadable file costs this frame only
                yield Skipped(index, f"{type(exc).__name__}: {exc}")
                continue
            ns = round(index * 1e9 / self.rate_hz)
            yield Frame(index, sample.stem, ns // 1_000_000_000, ns % 1_000_000_000, self.name, ns, image, label)


def open_recording(path, topic: str | None = None, labels_topic: str | None = None, rate_hz: float = 10.0,
                   name: str | None = None):
    """A bag (directory with metadata.yaml, or .mcap / .db3 file) or an image folder."""
    path = Path(path)
    if path.is_file() or (path / "metadata.yaml").is_file():
        return BagRecording(path, topic, labels_topic, name)
    if path.is_dir():
        if topic is not None or labels_topic is not None:
            raise RecordingError(f"{path} is an image folder: --topic / --labels-topic apply to bags only")
        return FolderRecording(path, rate_hz, name)
    raise RecordingError(f"recording {path} does not exist")
