"""Start and stop of the node processes: `--help` without ROS, and SIGINT/SIGTERM ending the process with
exit code 0 and no traceback at any moment.

Why its own module, standard library only: the executables import it before anything heavy (rclpy, and
torch through the engine's parameter table takes seconds). Python's default SIGINT handler raises
KeyboardInterrupt wherever the interpreter is, e.g. inside `import torch`, which prints a traceback and
exits 1 ("process has died" under launch); rclpy's handler raises it inside destroy_node when launch
forwards a second SIGINT. Here a signal during start-up ends the process at once (nothing is open that
the OS does not release), and once a node spins, every signal only sets an event its loop watches.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
HELP_FLAGS = ("-h", "--help")


def exit_on_signal_while_starting() -> None:
    """Until `StopSignals` takes over, SIGINT/SIGTERM end the process with exit code 0."""
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)


def _exit_now(signum, frame) -> None:
    sys.stderr.flush()
    os._exit(0)


def wants_help(argv: list[str]) -> bool:
    """`-h`/`--help` among the program's own arguments (before `--ros-args`; argv[0] is the program)."""
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    return any(arg in HELP_FLAGS for arg in own)


class StopSignals:
    """While a node spins: SIGINT and SIGTERM (the first, and every later one launch forwards) set `event`;
    the node's loop sees it and tears down. `restore()` puts the previous handlers back."""

    def __init__(self):
        self.event = threading.Event()
        self._previous = {sig: signal.signal(sig, self._stop) for sig in SIGNALS}

    def _stop(self, signum, frame) -> None:
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def leave(code: int = 0) -> None:
    """End the process after the teardown without interpreter finalisation (with torch loaded it took
    0.5-3 s, longer than the shutdown budget, and releases nothing the OS does not release anyway)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
