"""The command-line fault suite: every console script, run as a user runs it, on bad input. Each gives exit code 2
(1 where the work itself failed or was interrupted), one line on stderr that names the file or option, no
traceback, and leaves nothing that looks finished; inputs are never modified. Outputs and options are checked
before the work starts."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow            # each case starts a console script (torch import: seconds)
BIN = Path(sys.executable).parent


def run(command: str, *args, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([str(BIN / command), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The refusal: exit `code`, no traceback, and a last stderr line naming each of `words`."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in line, (word, line)
    return line


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    """A small recorded drive (a bag of the demo camera) inside a scratch folder."""
    from semla_ros.demo.drive_bag import write_drive_bag
    from semla_ros.demo.sequence import DomainSequence

    scratch = tmp_path_factory.mktemp("scratch")
    write_drive_bag(scratch / "drive", DomainSequence.parse("clear:0.5,night:0.5", 10.0))
    return scratch / "drive"


RELABEL_MODEL = ("--model", "tiny", "--allow-random-weights", "--topic", "/demo/image", "--no-compare")


def test_relabel_refuses_an_out_that_holds_its_input_and_touches_nothing(drive):
    scratch = drive.parent
    before = tree_digest(scratch)
    result = run("semla-relabel", drive, "--out", scratch, *RELABEL_MODEL, "--library", scratch, "--restart")
    one_line(result, 2, "--out", "holds the input", str(drive))
    assert tree_digest(scratch) == before


def test_relabel_refuses_a_file_as_out_before_any_work(drive, tmp_path):
    target = tmp_path / "README.md"
    target.write_text("keep me")
    result = run("semla-relabel", drive, "--out", target, *RELABEL_MODEL, "--library", tmp_path)
    one_line(result, 2, str(target), "is a file")
    assert target.read_text() == "keep me"


def test_relabel_missing_input_and_bad_option_values(drive, tmp_path):
    one_line(run("semla-relabel", tmp_path / "nosuch", "--out", tmp_path / "out", *RELABEL_MODEL,
                 "--library", tmp_path), 2, "nosuch", "does not exist")
    result = run("semla-relabel", drive, "--out", tmp_path / "out", *RELABEL_MODEL, "--library", tmp_path,
                 "--top-k", "0")
    one_line(result, 2, "top_k")
    assert not (tmp_path / "out").exists()


def test_relabel_on_a_topic_without_messages_is_an_error_not_a_report(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    with Writer(tmp_path / "empty", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=get_typestore(Stores.LATEST))
    result = run("semla-relabel", tmp_path / "empty", "--out", tmp_path / "out", "--model", "tiny",
                 "--allow-random-weights", "--topic", "/cam/image", "--library", tmp_path)
    one_line(result, 2, "nothing to relabel", "empty", "/cam/image")
    assert not (tmp_path / "out" / "report.md").exists()


def test_relabel_ctrl_c_says_a_rerun_resumes(tmp_path):
    """Interrupted inside the work: the folder's last "image" is a FIFO nobody writes, so the job cannot finish
    before the interrupt arrives (no timing involved); job.json says the job has started."""
    from relabel_helpers import build_domain_library, demo_model_config

    from semla_ros.demo.export import export_domain
    from semla_ros.relabel.state import JOB_FILE

    folder = export_domain(tmp_path / "data", "night", range(500, 503))
    os.mkfifo(folder / "images" / "zz_still_being_written.png")
    config = demo_model_config(tmp_path)
    build_domain_library(tmp_path / "library", config, domains=("clear", "night"), frames=1)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([str(BIN / "semla-relabel"), str(folder), "--out", str(out), "--model", str(config),
                             "--allow-random-weights", "--no-compare", "--library", str(tmp_path / "library")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    while not (out / JOB_FILE).exists():
        assert proc.poll() is None, proc.communicate()[1]
        subprocess.run(["sleep", "0.05"], check=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 1, (proc.returncode, err)
    assert err.strip().splitlines()[-1] == ("semla-relabel: interrupted; what was finished is kept; rerun the same "
                                            "command to resume")
    assert not (out / "report.md").exists()


def test_fixture_check_on_a_folder_that_is_no_fixture(tmp_path):
    one_line(run("semla-fixture-check", tmp_path), 2, str(tmp_path), "missing config.json")


def test_eval_run_on_a_missing_dataset(tmp_path):
    result = run("semla-eval", "run", "--data", tmp_path / "nosuch", "--model", "tiny", "--allow-random-weights",
                 "--out", tmp_path / "out")
    one_line(result, 2, "nosuch")
    assert not (tmp_path / "out").exists()
