"""What `semla-library list / inspect / import` report (core/library_report.py): entries and skipped ones,
the distance table and its size bound, an import that keeps existing entries unless told to overwrite."""
from __future__ import annotations

import shutil

import numpy as np

from semla_ros.core import library_report
from semla_ros.core.library import AdapterEntry, AdapterLibrary


def test_list_and_describe_name_every_entry_and_every_skipped_one(fixture_dir, tmp_path):
    lib_dir = tmp_path / "lib"
    shutil.copytree(fixture_dir / "loradb", lib_dir)
    (lib_dir / "night" / "night_statistics.npz").unlink()
    lib = AdapterLibrary.open(lib_dir)
    info = library_report.describe(lib)
    assert [e["name"] for e in info["entries"]] == ["fog", "rain"]
    assert info["skipped"][0]["name"] == "night" and "missing centroid file" in info["skipped"][0]["reason"]
    lines = library_report.list_lines(lib)
    assert lines[0].endswith("2 entries, 1 skipped") and lines[-1].startswith("  SKIPPED night: ")
    assert any(line.split()[0] == "rain" and "official" in line for line in lines[2:-1])


def test_distance_table_is_symmetric_and_omitted_for_large_libraries():
    def library(n):
        entries = [AdapterEntry(f"e{i}", {}, 1.0, np.array([3.0 * i, 4.0 * i], np.float32), {}, False)
                   for i in range(n)]
        return AdapterLibrary(None, entries)

    lines = library_report.distance_lines(library(3))
    rows = [line.split() for line in lines[2:]]
    assert lines[1].split() == ["e0", "e1", "e2"] and [r[0] for r in rows] == ["e0", "e1", "e2"]
    assert [float(v) for v in rows[0][1:]] == [0.0, 5.0, 10.0] and float(rows[2][2]) == 5.0
    big = library_report.distance_lines(library(library_report.TABLE_MAX + 1))
    assert len(big) == 2 and "distance table omitted" in big[1]


def test_import_copies_valid_entries_and_keeps_existing_ones(fixture_dir, tmp_path):
    lib = AdapterLibrary.open(fixture_dir / "loradb")
    into = tmp_path / "into"
    first = library_report.import_lines(fixture_dir / "loradb", lib, into)
    assert first[0].endswith("3 valid entries, 0 invalid") and first[-1].startswith("copied 3 entries")
    assert sorted(p.name for p in into.iterdir()) == ["fog", "night", "rain"]
    (into / "fog" / "marker").write_text("mine")
    again = library_report.import_lines(fixture_dir / "loradb", lib, into)
    assert sum("kept existing" in line for line in again) == 3 and (into / "fog" / "marker").is_file()
    library_report.import_lines(fixture_dir / "loradb", lib, into, overwrite=True)
    assert not (into / "fog" / "marker").exists()
    assert AdapterLibrary.open(into).names == ("fog", "night", "rain")
