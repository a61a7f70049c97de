"""`semla-fixture-check DIR`: compare this implementation with a reference fixture from the official code.

Prints one line per tensor (name, shape, max abs diff, tolerance, ok) and exits 1 when any is past its tolerance
(2 when DIR is not a usable fixture). When DIR/loradb and DIR/fusion_expected.npz exist, the SemLA fusion part
is checked too, through the engine's `semla_ros.core.fusion_check.check_fusion_fixture`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FUSION_MODULE = "semla_ros.core.fusion_check"


def _fusion_rows(fixture_dir: Path, run) -> list | None:
    """Rows of the fusion check, or None when the engine's checker does not exist in this checkout."""
    try:
        from semla_ros.core.fusion_check import check_fusion_fixture
    except ModuleNotFoundError as exc:
        if exc.name != FUSION_MODULE:
            raise  # a real missing dependency inside the checker must not be hidden
        return None
    return list(check_fusion_fixture(fixture_dir, run.model, run.predictor))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-fixture-check", description=__doc__.splitlines()[0])
    parser.add_argument("fixture_dir", type=Path, help="fixture directory (config.json, model.safetensors, ...)")
    args = parser.parse_args(argv)

    from semla_ros.catseg.fixture import check_catseg_fixture, missing_fixture_files, print_rows

    fixture_dir = args.fixture_dir
    missing = missing_fixture_files(fixture_dir)
    if missing:
        print(f"error: {fixture_dir} is not a CAT-Seg fixture (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    print(f"fixture {fixture_dir}")
    run = check_catseg_fixture(fixture_dir)
    rows = list(run.rows)
    print_rows(rows)
    for name in run.skipped:
        print(f"{name}: not produced by this implementation (skipped)")

    if (fixture_dir / "loradb").is_dir() and (fixture_dir / "fusion_expected.npz").is_file():
        fusion = _fusion_rows(fixture_dir, run)
        if fusion is None:
            print(f"fusion: unavailable ({FUSION_MODULE} is not in this checkout); fusion part not checked")
        else:
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
