"""An export held in progress, for tests of closing an engine while its background build exports."""
from __future__ import annotations

import threading


class HeldExport:
    """Wraps an export function: a call waits, once begun, until `release` is set, then exports."""

    def __init__(self, export):
        self.export = export
        self.entered, self.release, self.done = threading.Event(), threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []

    def __call__(self, *args, **kwargs):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.release.wait(60), "close() never began"
        self.export(*args, **kwargs)
        self.done.set()

    def close_during(self, closable) -> None:
        """Call `closable.close()` while the export is held; the export goes on once close() has begun (its
        `closing` event), so close() meets it in flight."""
        assert self.entered.wait(60), "the build never began its export"
        releaser = threading.Thread(target=lambda: closable.closing.wait(60) and self.release.set())
        releaser.start()
        closable.close()
        releaser.join()

    @property
    def ended(self) -> bool:
        """The export has finished and so has the thread that ran it."""
        return self.done.is_set() and not any(t.is_alive() for t in self.threads)
