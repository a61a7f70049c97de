"""The command-line fault suite: every console script, run as a user runs it, on bad input. Each gives exit code 2
(1 where the work itself failed or was interrupted), one line on stderr that names the file or option, no
traceback, and leaves nothing that looks finished; inputs are never modified. Outputs and options are checked
before the work starts."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
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


# ---------------------------------------------------------------- semla-eval, semla-library, semla-bench library
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The demo's small model (saved), a 3-image fog domain whose FIRST image is truncated, and a library."""
    from eval_world import save_model, small_model

    from semla_ros.demo.export import export_demo_world

    root = tmp_path_factory.mktemp("world")
    config, weights = save_model(small_model(), root / "model")
    data = export_demo_world(root / "data", ("fog",), 3)
    first = sorted((data / "fog" / "images").iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])                 # a truncated PNG: header, no pixels
    model = ("--model", config, "--checkpoint", weights, "--navigator", "tower")
    assert run("semla-library", "train", data / "fog", "--library", root / "lib", "--steps", "1",
               "--max-images", "3", "--quiet", *model).returncode == 0    # skips the truncated one
    return {"root": root, "data": data, "model": model, "truncated": first, "lib": root / "lib"}


def fifo_dataset(tmp_path: Path) -> Path:
    """A dataset whose only image is a FIFO nobody writes: a command that reads any image hangs (and the
    test times out), so a prompt refusal proves the check came before the work, with no timing involved."""
    from semla_ros.evaluation.dataset import write_classes

    images = tmp_path / "fifo" / "fog" / "images"
    images.mkdir(parents=True)
    (images.parent / "labels").mkdir()
    os.mkfifo(images / "a.png")
    (images.parent / "labels" / "a.png").write_bytes(b"")
    write_classes(tmp_path / "fifo" / "classes.txt", ["road", "sky"])
    return tmp_path / "fifo"


def test_eval_skips_and_counts_a_truncated_image_even_with_max_images(world, tmp_path):
    before = tree_digest(world["data"])
    result = run("semla-eval", "run", "--data", world["data"], *world["model"], "--library", world["lib"],
                 "--methods", "zero-shot", "oracle", "--max-images", "2", "--no-leave-one-out", "--quiet",
                 "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped 1 unreadable file(s)" in result.stdout and world["truncated"].name in result.stdout
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [s[0] for s in saved["zero-shot"]["skipped"]] == [str(world["truncated"])]
    assert saved["zero-shot"]["scores"]["zero-shot"]["fog"]["images"] == 1     # the first 2 files, 1 readable
    assert tree_digest(world["data"]) == before


def test_eval_on_a_folder_without_a_readable_image_is_an_error_not_a_report(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    for image in (data / "fog" / "images").iterdir():
        image.write_bytes(b"not a png")
    result = run("semla-eval", "run", "--data", data, *world["model"], "--methods", "zero-shot", "--quiet",
                 "--out", tmp_path / "out")
    one_line(result, 2, "no readable image", str(data / "fog"))
    assert not (tmp_path / "out" / "results.json").exists()


def test_eval_checks_library_and_out_before_reading_any_image(world, tmp_path):
    data = fifo_dataset(tmp_path)
    result = run("semla-eval", "run", "--data", data, *world["model"], "--library", tmp_path / "nosuch",
                 "--out", tmp_path / "out", timeout=60)
    one_line(result, 2, "--library", "nosuch", "does not exist")
    (tmp_path / "README.md").write_text("keep me")
    result = run("semla-eval", "run", "--data", data, *world["model"], "--library", world["lib"],
                 "--out", tmp_path / "README.md", timeout=60)
    one_line(result, 2, "--out", "README.md", "is a file")
    assert (tmp_path / "README.md").read_text() == "keep me"
    result = run("semla-eval", "run", "--data", data, *world["model"], "--library", world["lib"],
                 "--max-images", "0", "--out", tmp_path / "out", timeout=60)
    one_line(result, 2, "max_images")


def test_library_train_refuses_max_images_0_and_an_unwritable_library_before_work(world, tmp_path):
    data = fifo_dataset(tmp_path)
    one_line(run("semla-library", "train", data / "fog", "--library", tmp_path / "lib", "--max-images", "0",
                 *world["model"], timeout=60), 2, "--max-images", "below 1")
    (tmp_path / "file").write_text("keep me")
    one_line(run("semla-library", "train", data / "fog", "--library", tmp_path / "file", *world["model"],
                 timeout=60), 2, "--library", "is a file")
    assert (tmp_path / "file").read_text() == "keep me"
    one_line(run("semla-library", "import", world["lib"], "--into", tmp_path / "file"), 2, "--into", "is a file")
    assert (tmp_path / "file").read_text() == "keep me"


def test_library_train_skips_a_truncated_image_and_says_so(world, tmp_path):
    result = run("semla-library", "train", world["data"] / "fog", "--library", tmp_path / "lib", "--steps", "1",
                 "--max-images", "2", "--quiet", *world["model"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 images" in result.stdout and "skipped 1 unreadable file(s)" in result.stdout
    assert world["truncated"].name in result.stdout


def test_library_list_inspect_gaps_on_missing_or_unusable_libraries(world, tmp_path):
    one_line(run("semla-library", "list", tmp_path / "nosuch"), 2, "nosuch", "does not exist")
    broken = tmp_path / "broken"
    shutil.copytree(world["lib"], broken)
    (broken / "fog" / "adapter_config.json").unlink()
    for command in ("inspect", "list"):
        line = one_line(run("semla-library", command, broken), 2, "--library", "no usable entry", "fog")
        assert "adapter_config.json" in line                 # the reason, the same for every subcommand
    one_line(run("semla-library", "gaps", world["root"], "--library", broken), 2, "no usable entry", "fog",
             "adapter_config.json")
    (tmp_path / "out.md").write_text("keep me")
    one_line(run("semla-library", "gaps", world["root"], "--library", world["lib"], "--out", tmp_path / "out.md"),
             2, "--out", "is a file")
    assert (tmp_path / "out.md").read_text() == "keep me"
    one_line(run("semla-library", "gaps", tmp_path / "nosuch", "--library", world["lib"]), 2, "nosuch")


def test_library_list_shows_init_and_profile(world):
    result = run("semla-library", "list", world["lib"])
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[1:3]
    assert "init" in header and "profile" in header
    assert row.split()[:1] == ["fog"] and "standard" in row.split() and "semla" in row.split()


def test_bench_library_refuses_size_0_and_a_dir_of_other_files(tmp_path):
    one_line(run("semla-bench", "library", "--sizes", "40,0"), 2, "--sizes", "below 1")
    (tmp_path / "mine.txt").write_text("keep me")
    from semla_ros.bench import library
    from semla_ros.cli.ending import run_command

    before = tree_digest(tmp_path)
    # in-process through run_command until cli/bench.py ends its benchmarks through it as well
    assert run_command("semla-bench library", library.main, ["--config", "tiny", "--dir", str(tmp_path)]) == 2
    assert tree_digest(tmp_path) == before


def _interrupt_while_reading(command: list[str], fifo: Path) -> subprocess.CompletedProcess:
    """Start `command`, wait until it has opened `fifo` (an image) for reading - a FIFO can be opened for writing
    without blocking only once a reader has it open, so no timing is involved - then Ctrl-C it while it waits
    for the image's bytes."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    while True:
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:                     # ENXIO: no reader yet
            assert proc.poll() is None, proc.communicate()[1]
            subprocess.run(["sleep", "0.05"], check=True)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(writer)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_ctrl_c_in_eval_and_train_exits_1_with_one_line_and_leaves_no_result(world, tmp_path):
    data = fifo_dataset(tmp_path)
    fifo = data / "fog" / "images" / "a.png"
    result = _interrupt_while_reading([str(BIN / "semla-eval"), "run", "--data", str(data), *map(str, world["model"]),
                                       "--methods", "zero-shot", "--out", str(tmp_path / "out")], fifo)
    assert one_line(result, 1) == "semla-eval: interrupted; nothing finished was left behind"
    assert not (tmp_path / "out" / "results.json").exists()
    result = _interrupt_while_reading([str(BIN / "semla-library"), "train", str(data / "fog"), "--library",
                                       str(tmp_path / "lib"), *map(str, world["model"])], fifo)
    assert one_line(result, 1) == "semla-library: interrupted; nothing finished was left behind"
    assert not (tmp_path / "lib").exists()


def test_bench_names_an_unknown_benchmark_and_ends_benchmarks_through_run_command(tmp_path):
    one_line(run("semla-bench", "nosuch"), 2, "nosuch", "library")       # what was wrong, and the choices
    (tmp_path / "mine.txt").write_text("keep me")
    one_line(run("semla-bench", "library", "--config", "tiny", "--dir", tmp_path), 2, "--dir", "did not make")
