"""Library files an operator can break while the robot runs (issue 15, findings 4, 5, 6 and the file half
of 8): a file rewritten under an open library never crashes the process, one bad entry file is skipped
with its name and reason, absurd adapters are refused, and a FIFO never blocks a read."""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from semla_ros.core.library import AdapterLibrary

REPO = Path(__file__).resolve().parents[1]


def copy_entry(root: Path, source: str, name: str) -> Path:
    """Another entry with `source`'s files under `name` (its statistics file renamed to match)."""
    shutil.copytree(root / source, root / name)
    (root / name / f"{source}_statistics.npz").rename(root / name / f"{name}_statistics.npz")
    return root / name


def run_python(code: str, *args, timeout: float = 120, drop_dac_override: bool = False):
    """Run `code` in a fresh interpreter importing this checkout; the last stdout line is JSON."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_without_dac_override if drop_dac_override else None)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without_dac_override():
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding and inheritable sets, so
    that a process started as root obeys file modes (what `setpriv --bounding-set=-dac_override` does)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0].inheritable &= ~0b110
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    for cap in (1, 2):   # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


# ---------------------------------------------------------------------------- 4: no memory maps
REWRITE_UNDER_OPEN_LIBRARY = """
    import json, os, sys
    from semla_ros.core.fusion import fuse_deltas
    from semla_ros.core.library import AdapterLibrary

    root = sys.argv[1]
    path = lambda name: os.path.join(root, name, "adapter_model.safetensors")
    lib = AdapterLibrary.open(root, navigator_dim=768)
    before = {m: a.clone() for m, (a, b) in lib["fog"].factors.items()}   # fog is in use
    # an operator copies a new library over this one while it is open:
    with open(path("fog"), "r+b") as f:                 # rewritten in place, shorter
        f.truncate(os.path.getsize(path("fog")) // 3)
    with open(path("rain") + ".new", "wb") as f:        # replaced by a rename (another adapter)
        f.write(open(path("night"), "rb").read())
    os.replace(path("rain") + ".new", path("rain"))
    size = os.path.getsize(path("night"))
    with open(path("night"), "r+b") as f:               # overwritten in place, same size
        f.write(bytes(size))
    result = {}
    for e in lib.entries:
        try:
            fuse_deltas([e], [1.0])
            result[e.name] = "fused"
        except ValueError as exc:
            result[e.name] = str(exc)
    result["fog unchanged"] = all(bool((lib["fog"].factors[m][0] == a).all()) for m, a in before.items())
    print(json.dumps(result))
"""


def test_files_rewritten_under_an_open_library_never_crash_the_process(loradb):
    # memory-mapped factors died here by SIGBUS (exit -7) once the file under them was truncated
    result = run_python(REWRITE_UNDER_OPEN_LIBRARY, loradb)
    assert result["fog"] == "fused" and result["fog unchanged"]          # read before: the copy in memory
    for name in ("rain", "night"):                                         # not read yet: refused, named
        assert "changed on disk since the library was opened" in result[name], result


# ---------------------------------------------------------------------------- 5: one bad entry file
def _replace_with_dir(name):
    def corrupt(d):
        (d / name).unlink(missing_ok=True)
        (d / name).mkdir()
    return corrupt


def _replace_with_loop(name):
    def corrupt(d):
        (d / name).unlink(missing_ok=True)
        os.symlink(name, d / name)           # a symlink to itself
    return corrupt


def _entry_dir_loop(d):
    shutil.rmtree(d)
    os.symlink(d.name, d)


BAD_FILES = {
    "config is a directory": (_replace_with_dir("adapter_config.json"), "adapter_config.json is a directory"),
    "metadata is a directory": (_replace_with_dir("metadata.json"), "metadata.json is a directory"),
    "weights are a directory": (_replace_with_dir("adapter_model.safetensors"), "is a directory"),
    "centroid is a directory": (_replace_with_dir("night_statistics.npz"), "is a directory"),
    "config is a symlink loop": (_replace_with_loop("adapter_config.json"), "symbolic links"),
    "metadata is a symlink loop": (_replace_with_loop("metadata.json"), "symbolic links"),
    "entry is a symlink loop": (_entry_dir_loop, "symbolic links"),
}


@pytest.mark.parametrize("what", sorted(BAD_FILES))
def test_one_bad_entry_file_skips_only_that_entry(loradb, what):
    corrupt, reason = BAD_FILES[what]
    corrupt(loradb / "night")
    lib = AdapterLibrary.open(loradb, navigator_dim=768)
    assert lib.names == ("fog", "rain")
    assert len(lib.skipped) == 1 and lib.skipped[0][0] == "night" and reason in lib.skipped[0][1], lib.skipped
    assert lib.reload().names == ("fog", "rain")


OPEN_AND_LIST = """
    import json, sys
    from semla_ros.core.library import AdapterLibrary
    lib = AdapterLibrary.open(sys.argv[1], navigator_dim=768)
    print(json.dumps({"names": list(lib.names), "skipped": dict(lib.skipped)}))
"""


def test_unreadable_files_and_entry_folders_skip_only_their_entry(loradb):
    (loradb / "night" / "adapter_config.json").chmod(0)
    (loradb / "rain").chmod(0)
    snow = copy_entry(loradb, "fog", "snow")
    (snow / "metadata.json").write_text(json.dumps({"navigator": "x"}))
    (snow / "metadata.json").chmod(0)
    try:    # root reads anything: the process drops the capabilities that let it
        result = run_python(OPEN_AND_LIST, loradb, drop_dac_override=True)
    finally:
        (loradb / "rain").chmod(0o755)
    assert result["names"] == ["fog"]
    assert result["skipped"] == {
        "night": "adapter_config.json cannot be opened (Permission denied)",
        "rain": "adapter_config.json cannot be opened (Permission denied)",
        "snow": "metadata.json cannot be opened (Permission denied)"}


# ---------------------------------------------------------------------------- 6: absurd adapters
@pytest.mark.parametrize("alpha", [1e30, 1e40])
def test_absurd_lora_alpha_is_refused_at_open(loradb, alpha):
    config = loradb / "night" / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"lora_alpha": alpha}))
    lib = AdapterLibrary.open(loradb, navigator_dim=768)
    assert lib.names == ("fog", "rain")
    assert "LoRA scaling" in dict(lib.skipped)["night"] and f"{alpha:g}" in dict(lib.skipped)["night"]


# ---------------------------------------------------------------------------- 8: special files never block
def test_fifos_in_place_of_entry_files_never_block_the_open(loradb):
    os.unlink(loradb / "night" / "adapter_config.json")
    os.mkfifo(loradb / "night" / "adapter_config.json")
    os.mkfifo(loradb / "rain" / "metadata.json")
    for name, file in (("snow", "adapter_model.safetensors"), ("hail", "hail_statistics.npz")):
        entry = copy_entry(loradb, "fog", name)
        os.unlink(entry / file)
        os.mkfifo(entry / file)
    # a blocking read of a FIFO waits for a writer forever: the subprocess's timeout would end the test
    result = run_python(OPEN_AND_LIST, loradb, timeout=120)
    assert result["names"] == ["fog"]
    assert set(result["skipped"]) == {"night", "rain", "snow", "hail"}
    assert all("is a FIFO, not a regular file" in reason for reason in result["skipped"].values()), result


def test_oversized_or_special_metadata_is_refused_not_read(loradb):
    (loradb / "night" / "metadata.json").write_bytes(b" " * (5 << 20))    # larger than any real config
    lib = AdapterLibrary.open(loradb, navigator_dim=768)
    assert "more than" in dict(lib.skipped)["night"] and lib.names == ("fog", "rain")
    np.testing.assert_array_equal(lib["fog"].centroid, np.load(loradb / "fog" / "fog_statistics.npz")
                                  ["train_average_embedding"][0])
