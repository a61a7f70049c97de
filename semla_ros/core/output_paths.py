"""The one check of a path a command will write, made before any work starts: a result found unwritable only
after an hour of work is an hour lost, and an output folder that holds (or lies inside) an input could
overwrite or re-read what the user asked us to keep."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def check_output_folder(path, option: str, inputs: Iterable = ()) -> Path:
    """Refuse (ValueError naming `option`) a folder to write that is a file, holds or lies inside one of
    `inputs`, or cannot be created or written; return it. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder; give a folder for the outputs")
    root = path.resolve()
    for source_path in inputs:
        source = Path(source_path).resolve()
        if source == root or root in source.parents:
            raise ValueError(f"{option} {path} holds the input {source_path}; give an output folder outside "
                             "the inputs")
        if source in root.parents:
            raise ValueError(f"{option} {path} lies inside the input {source_path}; give an output folder "
                             "outside the inputs")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {existing}; give a writable folder")
    return path


def check_input_folder(path, option: str) -> Path:
    """Refuse (ValueError naming `option`) an input folder that does not exist or is not a folder."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{option} {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"{option} {path} is not a folder")
    return path
