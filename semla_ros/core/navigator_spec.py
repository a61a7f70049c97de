"""NavigatorSpec: a navigator description parsed (the grammar is in core/navigator.py's docstring).

Why its own module, without torch: the node's parameter validation checks a `navigator` value long before
(or without) any navigator is built, and importing torch takes seconds (README, "Start-up").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NavigatorSpec:
    """A parsed navigator description (grammar: core/navigator.py)."""

    kind: str                  # "tower" | "openclip"
    model: str | None = None   # open_clip model name
    tag: str | None = None     # open_clip pretrained tag whose settings (and, without path, weights) are used
    path: str | None = None    # local checkpoint file

    @classmethod
    def parse(cls, spec: str) -> "NavigatorSpec":
        text = str(spec).strip()
        if text == "tower":
            return cls("tower")
        if not text.startswith("openclip:"):
            raise ValueError(f"navigator {spec!r} is not 'tower' or 'openclip:MODEL/TAG' "
                             "(or openclip:MODEL/PATH, openclip:MODEL/TAG=PATH)")
        model, sep, source = text[len("openclip:"):].partition("/")
        if not model or not sep or not source or any(c.isspace() for c in model):
            raise ValueError(f"navigator {spec!r}: expected openclip:MODEL/TAG, openclip:MODEL/PATH or "
                             "openclip:MODEL/TAG=PATH")
        tag, eq, path = source.partition("=")
        if eq:
            if not tag or not path:
                raise ValueError(f"navigator {spec!r}: TAG=PATH needs both a tag and a path")
            return cls("openclip", model, tag, path)
        if os.sep in source or Path(source).suffix:
            return cls("openclip", model, None, source)
        return cls("openclip", model, source, None)
