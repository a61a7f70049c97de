"""The demo camera's drive recorded as a ROS 2 bag, without ROS: what `ros2 bag record /demo/image
/demo/ground_truth` would hold after the demo camera played a sequence.

Same frames as the camera node (`ros/demo_camera.py`): frame i shows `sequence.domain_at(i)`, street
`sequence.seed_at(i, seed_base)`; `image` rgb8 and `ground_truth` mono8 share one header stamped
i / rate seconds after `start_ns`. Used by the relabelling tests, its benchmark and the gap demo, and
recorded for a user by `record_drive_bag` (`semla-demo --record-bag DIR`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sequence import CAMERA_SEED_BASE, DomainSequence
from .world import DEFAULT_SIZE, render


def drive_frames(sequence: DomainSequence, size=DEFAULT_SIZE, seed_base: int = CAMERA_SEED_BASE, frames=None):
    """(index, domain, seed, Frame) for every frame of one pass (or the first `frames`)."""
    count = sequence.num_frames if frames is None else int(frames)
    for i in range(count):
        domain, seed = sequence.domain_at(i), sequence.seed_at(i, seed_base)
        yield i, domain, seed, render(domain, seed, size)


def write_drive_bag(path, sequence: DomainSequence, size=DEFAULT_SIZE, seed_base: int = CAMERA_SEED_BASE,
                    namespace: str = "/demo", storage: str = "mcap", start_ns: int = 1_700_000_000 * 10**9,
                    frames=None) -> dict:
    """Write the bag; returns {index: (domain, seed)} of its frames."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    truth = {}
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        image_c = writer.add_connection(f"{namespace}/image", Image.__msgtype__, typestore=store)
        truth_c = writer.add_connection(f"{namespace}/ground_truth", Image.__msgtype__, typestore=store)
        for i, domain, seed, frame in drive_frames(sequence, size, seed_base, frames):
            ns = start_ns + round(i * 1e9 / sequence.rate_hz)
            header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="demo_camera")
            for connection, pixels, encoding in ((image_c, frame.image, "rgb8"), (truth_c, frame.labels, "mono8")):
                pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
                msg = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                            is_bigendian=0, step=pixels.strides[0], data=pixels.reshape(-1))
                writer.write(connection, ns, store.serialize_cdr(msg, Image.__msgtype__))
            truth[i] = (domain, seed)
    return truth


def record_drive_bag(path, sequence: DomainSequence, storage: str = "mcap") -> dict:
    """`semla-demo --record-bag DIR`: the demo drive as a bag at `path` (a rosbag2 folder), checked before any
    frame is rendered (an existing path is never replaced) and written under a hidden name, renamed into place
    when complete, so an interrupted recording leaves nothing that looks like a bag. Returns what
    `write_drive_bag` does."""
    import shutil

    from ..core.output_paths import check_output_folder

    path = Path(path)
    if path.exists() or path.is_symlink():
        raise ValueError(f"--record-bag {path} exists; give a new folder name for the bag")
    check_output_folder(path.parent, "--record-bag")
    staging = path.with_name(f".{path.name}.partial")      # the bag keeps its own name inside (its file names)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        truth = write_drive_bag(staging / path.name, sequence, storage=storage)
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return truth
