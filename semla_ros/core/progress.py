"""The one progress bar of every long command: a tqdm bar with an ETA on stderr, quiet with `--quiet` and when
stderr is not a terminal (tqdm's `disable=None`), so logs and pipes get no carriage-return noise."""
from __future__ import annotations


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", quiet: bool = False, **kwargs):
    """A tqdm bar (a context manager; `.update(n)`, `.close()`); a no-op one when quiet or not on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False, **kwargs)
