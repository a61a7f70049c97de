"""How every `semla-*` command ends: one line in the user's words, an exit code a script can act on, and a
traceback only when asked for.

    0  done
    1  the work itself failed, or was interrupted (Ctrl-C / SIGTERM; the line says whether a rerun resumes)
    2  bad input: a missing, empty, corrupt or unwritable path, or a nonsense option value (argparse's own
       usage errors exit 2 as well)

`--debug` anywhere on the command line prints the traceback of a failure as well.
"""
from __future__ import annotations

import signal
import sys
import traceback
from typing import Callable, Sequence

# Errors that mean "the input or an option is wrong": the user can fix them, so they exit 2.
# (OSError covers unreadable, missing and unwritable paths; ValueError our own refusals, which name the
# file or option.)
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


class WorkFailed(RuntimeError):
    """The work ran and failed (exit 1), said in one line."""


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run_command(name: str, body: Callable[[list[str]], int], argv: Sequence[str] | None = None, *,
                interrupted: str = "nothing finished was left behind") -> int:
    """Run `body(argv)` (a command's main without `--debug`) and turn how it ends into an exit code and one
    line on stderr. `interrupted` says what a user should know after Ctrl-C (e.g. that a rerun resumes)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminate)     # SIGTERM ends a command like Ctrl-C does
    except ValueError:                                # not the main thread (a test calling main())
        previous = None
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; {interrupted}", file=sys.stderr)
        return 1
    except WorkFailed as exc:
        _say(name, str(exc), debug)
        return 1
    except INPUT_ERRORS as exc:
        _say(name, _describe(exc), debug)
        return 2
    except Exception as exc:     # noqa: BLE001 - the one place a command's unexpected failure is reported
        _say(name, f"failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", debug)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    """An OSError names its file and what went wrong ("cannot write /x/out: Permission denied")."""
    if isinstance(exc, OSError) and not isinstance(exc, ValueError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _say(name: str, line: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"{name}: {line}", file=sys.stderr)
