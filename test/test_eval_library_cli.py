"""`semla-library`: import validates an official loradb, train/add/list/inspect make and read entries."""
import shutil

import pytest
from eval_world import save_model, small_model

from semla_ros.cli.library import main
from semla_ros.core.library import AdapterLibrary
from semla_ros.demo.export import export_demo_world


def test_import_official_loradb(fixture_dir, tmp_path, capsys):
    assert main(["import", str(fixture_dir / "loradb"), "--navigator-dim", "768"]) == 0
    out = capsys.readouterr().out
    assert "3 valid entries, 0 invalid" in out and "OK fog" in out and "inert CLIP q/k/v" in out
    # copied, official layout kept (no metadata.json added: it would change how the entry is read)
    assert main(["import", str(fixture_dir / "loradb"), "--into", str(tmp_path / "lib")]) == 0
    lib = AdapterLibrary.open(tmp_path / "lib")
    assert lib.names == ("fog", "night", "rain") and all(e.official_layout for e in lib.entries)
    # a damaged entry is reported with its reason and the exit code says so
    broken = tmp_path / "broken"
    shutil.copytree(fixture_dir / "loradb", broken)
    (broken / "night" / "night_statistics.npz").unlink()
    assert main(["import", str(broken)]) == 1
    assert "INVALID night: missing centroid file" in capsys.readouterr().out
    assert main(["import", str(fixture_dir / "loradb"), "--navigator-dim", "512"]) == 2


@pytest.mark.slow
def test_train_add_list_inspect(tmp_path, capsys):
    model = small_model()
    config, weights = save_model(model, tmp_path / "model")
    data = export_demo_world(tmp_path / "data", ("fog",), 2)
    lib = tmp_path / "lib"
    common = ["--model", str(config), "--checkpoint", str(weights), "--navigator", "tower"]
    assert main(["train", str(data / "fog"), "--library", str(lib), "--steps", "1", "--batch-size", "1",
                 "--init", "rrqr", "--quiet"] + common) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["train", str(data / "fog"), "--library", str(lib), "--steps", "1", "--quiet"] + common) == 2
    # add: the PEFT files of that adapter + an image folder -> a new entry with its own centroid
    assert main(["add", str(lib / "fog"), str(data / "fog" / "images"), "--library", str(lib),
                 "--name", "fog-copy"] + common) == 0
    opened = AdapterLibrary.open(lib, model=model)
    assert opened.names == ("fog", "fog-copy") and not opened.skipped
    assert opened["fog-copy"].metadata["navigator"] == opened["fog"].metadata["navigator"]
    assert main(["list", str(lib)]) == 0
    assert "fog-copy" in capsys.readouterr().out
    png = tmp_path / "map.png"
    assert main(["inspect", str(lib), "--map", str(png), "--images", f"fog={data / 'fog'}"] + common) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # adding something that is not an adapter fails cleanly and leaves nothing behind
    assert main(["add", str(data / "fog"), str(data / "fog" / "images"), "--library", str(lib),
                 "--name", "bad"] + common) == 2
    assert not (lib / "bad").exists()
    assert sorted(p.name for p in lib.iterdir()) == ["fog", "fog-copy"]


def test_inspect_deep_reads_every_factor(fixture_dir, tmp_path, capsys):
    lib = tmp_path / "lib"
    shutil.copytree(fixture_dir / "loradb", lib)
    weights = lib / "night" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)          # header intact, every value NaN
    weights.write_bytes(bytes(data))
    assert main(["inspect", str(lib)]) == 0                # opening reads headers only: night looks fine
    assert "night" in capsys.readouterr().out
    assert main(["inspect", str(lib), "--deep", "--model", "tiny", "--allow-random-weights"]) == 1
    out = capsys.readouterr().out
    assert "BAD night: " in out and "NaN or inf" in out and "deep check: 2 of 3 entries usable" in out
    assert "OK fog: 46 modules, |dW|_F mean" in out and "OK rain" in out


@pytest.mark.slow
def test_train_recyclelora_and_fisa_from_the_command_line(tmp_path, capsys):
    import json

    model = small_model()
    config, weights = save_model(model, tmp_path / "model")
    data = export_demo_world(tmp_path / "data", ("night",), 2)
    lib = tmp_path / "lib"
    common = ["--model", str(config), "--checkpoint", str(weights), "--navigator", "tower", "--steps", "1",
              "--batch-size", "1", "--quiet"]
    assert main(["train", str(data / "night"), "--library", str(lib), "--name", "night-recycle",
                 "--init", "recyclelora", "--sub-rank", "2"] + common) == 0
    assert "r=16" in capsys.readouterr().out            # main 6 + sub 2, stored with their initial factors
    assert main(["train", str(data / "night"), "--library", str(lib), "--name", "night-fisa",
                 "--profile", "fisa"] + common) == 0
    assert main(["train", str(data / "night"), "--library", str(lib), "--name", "bad",
                 "--profile", "fisa", "--init", "rrqr"] + common) == 2
    assert "init must be 'standard'" in capsys.readouterr().err and not (lib / "bad").exists()
    assert main(["list", str(lib), "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert entries["night-recycle"]["init"] == "recyclelora" and entries["night-fisa"]["profile"] == "fisa"
    assert entries["night-fisa"]["modules"] == 9
    assert entries["night-fisa"]["trainable_parameters"] < entries["night-recycle"]["trainable_parameters"]
