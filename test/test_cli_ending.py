"""How a command ends (cli/ending.py): bad input exits 2 with one line naming the file, a failed or interrupted
run exits 1, no traceback unless --debug; SIGTERM in a real process ends it like Ctrl-C."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semla_ros.cli.ending import WorkFailed, run_command

REPO = Path(__file__).resolve().parents[1]


def _raise(exc):
    def body(args):
        raise exc
    return body


@pytest.mark.parametrize("exc, code, line", [
    (ValueError("--sizes must be >= 1, got 0"), 2, "semla-x: --sizes must be >= 1, got 0"),
    (FileNotFoundError(2, "No such file or directory", "/data/none"), 2,
     "semla-x: /data/none: No such file or directory"),
    (PermissionError(13, "Permission denied", "/ro/out"), 2, "semla-x: /ro/out: Permission denied"),
    (WorkFailed("2 of 5 adapters failed to train"), 1, "semla-x: 2 of 5 adapters failed to train"),
    (KeyboardInterrupt(), 1, "semla-x: interrupted; nothing finished was left behind"),
    (ZeroDivisionError("division by zero"), 1,
     "semla-x: failed: ZeroDivisionError: division by zero (rerun with --debug for the traceback)"),
])
def test_each_ending_is_one_line_and_an_exit_code(capsys, exc, code, line):
    assert run_command("semla-x", _raise(exc), []) == code
    err = capsys.readouterr().err
    assert err.strip() == line and "Traceback" not in err


def test_debug_adds_the_traceback_and_is_not_passed_on(capsys):
    seen = []

    def body(args):
        seen.append(args)
        raise ValueError("bad --top-k")

    assert run_command("semla-x", body, ["--top-k", "0", "--debug"]) == 2
    assert seen == [["--top-k", "0"]]
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("semla-x: bad --top-k")


def test_success_and_the_bodys_own_code_pass_through():
    assert run_command("semla-x", lambda args: 0, []) == 0
    assert run_command("semla-x", lambda args: None, []) == 0
    assert run_command("semla-x", lambda args: 1, []) == 1


def test_sigterm_ends_a_real_process_like_ctrl_c(tmp_path):
    script = tmp_path / "cmd.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from semla_ros.cli.ending import run_command

        def body(args):
            print("working", flush=True)
            time.sleep(60)
            return 0

        sys.exit(run_command("semla-x", body, [], interrupted="rerun the same command to resume"))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.readline().strip() == "working"       # the body runs: the handler is in place
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip() == "semla-x: interrupted; rerun the same command to resume"
