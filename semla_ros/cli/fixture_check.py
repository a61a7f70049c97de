"""`semla-fixture-check DIR`: compare this implementation with a reference fixture from the official code.

Prints one line per tensor (name, shape, max abs diff, tolerance, ok) and exits 1 when any is past its tolerance
(2 when DIR is not a usable fixture). When DIR/loradb and DIR/fusion_expected.npz exist, the SemLA fusion part
is checked too, through the node's fusion path (`semla_ros.verify.fusion_fixture`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from .ending import run_command

    return run_command("semla-fixture-check", check, argv)


def check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="semla-fixture-check", description=__doc__.splitlines()[0])
    parser.add_argument("fixture_dir", type=Path, help="fixture directory (config.json, model.safetensors, ...)")
    args = parser.parse_args(argv)

    from semla_ros.verify.catseg_fixture import check_catseg_fixture, missing_fixture_files, print_rows
    from semla_ros.verify.fusion_fixture import check_fusion_fixture

    fixture_dir = args.fixture_dir
    missing = missing_fixture_files(fixture_dir)
    if missing:
        raise ValueError(f"{fixture_dir} is not a CAT-Seg fixture (missing {', '.join(missing)}); give a fixture "
                         "folder such as ../shared/fixtures/catseg_official_A")
    print(f"fixture {fixture_dir}")
    run = check_catseg_fixture(fixture_dir)
    rows = list(run.rows)
    print_rows(rows)
    for name in run.skipped:
        print(f"{name}: not produced by this implementation (skipped)")

    if (fixture_dir / "loradb").is_dir() and (fixture_dir / "fusion_expected.npz").is_file():
        fusion = check_fusion_fixture(fixture_dir, run.model, run.predictor)
        print("fusion:")
        print_rows(fusion)
        rows += fusion

    failed = [row.name for row in rows if not row.ok]
    if failed:
        print(f"FAILED: {len(failed)} of {len(rows)} past tolerance: {', '.join(failed)}")
        return 1
    print(f"ok: all {len(rows)} checks within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
