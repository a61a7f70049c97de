"""The relabelled bag: what the node would have published for each recorded frame, written without ROS.

Topics (under a namespace, `/semla` by default, like the node's):
    mask            sensor_msgs/msg/Image   class ids at the frame's size, mono8 (<= 255 classes) or mono16
    support_score   semla_ros/msg/SupportScore   per frame
    class_map       semla_ros/msg/ClassMap       once, at the first frame: what the mask values mean
Every message carries its source frame's header and is written at the source frame's bag time, so
`ros2 bag play` of both bags side by side lines them up. The semla_ros message types are registered
with `rosbags` from the package's own msg/*.msg files (the definitions the node is built from).
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..core.frames import mask_encoding, mask_pixels

Storage = Literal["mcap", "sqlite3"]
STORAGES: tuple[str, ...] = get_args(Storage)


def message_dirs() -> list[Path]:
    """Where the package's .msg files are: the source tree's msg/, or share/semla_ros/msg of an install."""
    here = Path(__file__).resolve().parents[2]
    dirs = [here / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    dirs += [Path(p) / "share" / "semla_ros" / "msg" for p in prefixes]
    return [d for d in dirs if (d / "SupportScore.msg").is_file()]


def typestore():
    """A rosbags typestore with the standard ROS 2 types and semla_ros/msg/*."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    dirs = message_dirs()
    if not dirs:
        raise FileNotFoundError("semla_ros message definitions (msg/SupportScore.msg) not found beside the "
                                "package or under share/semla_ros/msg of AMENT_PREFIX_PATH")
    store = get_typestore(Stores.LATEST)
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"semla_ros/msg/{path.stem}"))
    store.register(types)
    return store


class MaskBagWriter:
    """Writes into `<path>.partial/<name>` and moves it to `path` on `close()`: a bag at `path` is complete, and
    its storage file is named after the bag (`relabelled/relabelled.mcap`), not after the temporary folder."""

    def __init__(self, path, classes, namespace: str = "/semla", storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.partial = self.staging / self.path.name
        self.classes = list(classes)
        self.encoding = mask_encoding(len(self.classes))
        self.store = typestore()
        t = self.store.types
        self._image, self._support, self._classmap = (t["sensor_msgs/msg/Image"], t["semla_ros/msg/SupportScore"],
                                                      t["semla_ros/msg/ClassMap"])
        self._header, self._time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.partial, version=9, storage_plugin=plugin)
        self.writer.open()
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""

        def add(topic, cls):
            return self.writer.add_connection(f"{ns}/{topic}", cls.__msgtype__, typestore=self.store)
        self._mask_c = add("mask", self._image)
        self._support_c = add("support_score", self._support)
        self._classmap_c = add("class_map", self._classmap)
        self.frames = 0

    def _write(self, connection, log_ns, msg, cls) -> None:
        self.writer.write(connection, int(log_ns), self.store.serialize_cdr(msg, cls.__msgtype__))

    def write(self, frame, class_ids: np.ndarray, support: dict) -> None:
        """One frame: `frame` has sec, nanosec, frame_id, log_ns; `support` the SupportScore fields."""
        header = self._header(stamp=self._time(sec=int(frame.sec), nanosec=int(frame.nanosec)),
                              frame_id=str(frame.frame_id))
        if self.frames == 0:
            self._write(self._classmap_c, frame.log_ns, self._classmap(
                header=header, class_names=self.classes, vocabulary_version=1, mask_encoding=self.encoding),
                self._classmap)
        pixels, _ = mask_pixels(class_ids, len(self.classes))
        self._write(self._mask_c, frame.log_ns, self._image(
            header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=self.encoding, is_bigendian=0,
            step=pixels.strides[0], data=pixels.view(np.uint8).reshape(-1)), self._image)
        def f(name):
            return float(support.get(name, math.nan))
        self._write(self._support_c, frame.log_ns, self._support(
            header=header, support_score=f("support_score"), ema_distance=f("ema_distance"),
            switch_threshold=f("switch_threshold"), consecutive_over_threshold=0,
            active_adapters=int(support.get("active_adapters", 0)), embedded_this_frame=True,
            scale_free_support=f("scale_free_support"), active_support=f("active_support"),
            active_scale_free_support=f("active_scale_free_support"), top_adapter=str(support.get("top_adapter", "")),
            active_is_top=bool(support.get("active_is_top", False))), self._support)
        self.frames += 1

    def close(self) -> Path:
        self.writer.close()
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.partial, self.path)
        self.staging.rmdir()
        return self.path

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
