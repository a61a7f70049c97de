"""The generated sections of README.md and docs/*.md: which command made each, with which settings, at which
commit, and whether those settings are still today's defaults (a number in the docs that a changed default
would change must not go stale silently).

    python -m semla_ros.cli.docs list                 # sections, their commands, whether current
    python -m semla_ros.cli.docs check                # exit 1 naming each stale section and its command
    python -m semla_ros.cli.docs regenerate [NAME ...]   # run the commands (all when none named), stamp them

Each section is marked `<!-- generated: NAME -->` in its file; `docs/stamps.json` records per section the
command, the settings it ran with (null: generated before stamps, not recorded) and the commit. `regenerate`
stamps a section only when its command succeeded; sections whose command writes prose (`writes_doc` False)
print their numbers for a person to copy and stay unstamped until `regenerate NAME --stamp-only` after that.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .ending import run_command

REPO = Path(__file__).resolve().parents[2]
STAMPS = Path("docs") / "stamps.json"


def _plain(settings) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(settings), default=list))


def _node() -> dict:
    from ..core.settings import SegmenterSettings

    return {"segmenter": _plain(SegmenterSettings())}


def _demo_node() -> dict:
    from ..core.settings import SegmenterSettings
    from ..demo.build_assets import BuildParams
    from ..demo.sequence import DEFAULT_SEQUENCE
    from ..demo.settings import DEMO_NODE_SETTINGS

    return {"segmenter": _plain(SegmenterSettings().replace(**DEMO_NODE_SETTINGS)),
            "assets": BuildParams().to_json(), "sequence": DEFAULT_SEQUENCE}


def _protocol() -> dict:
    from ..demo.build_assets import BuildParams
    from ..evaluation.protocol import ProtocolSettings

    protocol = {k: v for k, v in ProtocolSettings().to_json().items() if k != "methods"}
    return {"protocol": json.loads(json.dumps(protocol, default=list)), "assets": BuildParams().to_json()}


def _relabel() -> dict:
    from ..relabel.cluster import ClusterSettings
    from ..relabel.job import RelabelSettings

    return _demo_node() | {"relabel": _plain(RelabelSettings()), "cluster": _plain(ClusterSettings())}


def _gap_loop() -> dict:
    from ..core.coverage import CoverageSettings
    from ..relabel.cluster import ClusterSettings

    return _demo_node() | {"coverage": _plain(CoverageSettings()), "cluster": _plain(ClusterSettings())}


def _library() -> dict:
    from ..core.settings import SegmenterSettings

    s = SegmenterSettings()
    return {"retrieval": {"top_k": s.top_k, "temperature": s.temperature, "metric": s.metric}}


@dataclass(frozen=True)
class Section:
    """A generated section: where it is, the command that regenerates it, the settings its numbers depend on
    (today's defaults), whether the command rewrites the section itself, and its run time here."""

    name: str
    file: str
    command: str
    settings: Callable[[], dict]
    writes_doc: bool
    minutes_here: int
    mark: str = ""          # the text that marks it in `file` (default `<!-- generated: NAME -->`)

    @property
    def marker(self) -> str:
        return self.mark or f"<!-- generated: {self.name} -->"


SECTIONS = {s.name: s for s in (
    Section("demo", "README.md", "semla-demo", _demo_node, False, 5),
    Section("evaluation", "docs/evaluation.md", "semla-eval demo --out docs", _protocol, True, 25,
            "Reproduce: `semla-eval demo --out docs`"),
    Section("evaluation-training", "docs/evaluation.md", "semla-eval demo --compare-training --out docs",
            _protocol, True, 60, "<!-- training-comparison: begin -->"),
    Section("shifts", "docs/shifts.md",
            "semla-bench shifts --doc docs/shifts.md --support-doc docs/evaluation.md", _node, True, 18,
            "Reproduce: `semla-bench shifts --doc docs/shifts.md"),
    Section("shifts-overhead", "docs/shifts.md",
            "semla-bench shifts --overhead --threads 1 --reps 4 --frames 6 --warmup 8 --doc docs/shifts.md",
            _node, True, 5, "<!-- semla-bench shifts --overhead: begin -->"),
    Section("relabel", "docs/relabel.md", "semla-bench relabel", _relabel, False, 10),
    Section("gap-loop", "docs/relabel.md", "python -m semla_ros.demo.gap_loop --out docs", _gap_loop, False, 4),
    Section("library", "README.md",
            "semla-bench library --sizes 40,250,1000,10000 --eager-sizes 40,250 --threads 1 --swaps 7",
            _library, False, 40),
    Section("soak", "README.md",
            "semla-bench node --duration 1800 --rate 10 --cycle day,night,fog,dusk --dwell 30 --reload-every 60",
            _node, False, 35),
)}


def read_stamps(root: Path = REPO) -> dict:
    path = root / STAMPS
    return json.loads(path.read_text()) if path.is_file() else {}


def problems(root: Path = REPO) -> list[str]:
    """One sentence per section whose recorded settings are not today's defaults (or were never recorded), or
    whose marker or stamp is missing; each names the section and the command that regenerates it."""
    from ..relabel.state import manifest_differences

    stamps, out = read_stamps(root), []
    for s in SECTIONS.values():
        rerun = f"regenerate it with `{s.command}` (python -m semla_ros.cli.docs regenerate {s.name})"
        if s.marker not in (root / s.file).read_text():
            out.append(f"{s.name}: no `{s.marker}` in {s.file}")
        recorded = stamps.get(s.name, {}).get("settings")
        if recorded is None:
            out.append(f"{s.name} ({s.file}): its settings were never recorded; {rerun}")
            continue
        differ = manifest_differences(recorded, s.settings())
        if differ:
            out.append(f"{s.name} ({s.file}) ran with other settings than today's defaults "
                       f"(differs in: {', '.join(differ)}); {rerun}")
    return out


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+uncommitted" if dirty else "") if done.returncode == 0 else "unknown"


def stamp(name: str, root: Path = REPO) -> None:
    """Record that section `name` now holds its command's output with today's settings at this commit."""
    section = SECTIONS[name]
    stamps = read_stamps(root)
    stamps[name] = {"file": section.file, "command": section.command, "settings": section.settings(),
                    "commit": _commit(root)}
    tmp = root / STAMPS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True) + "\n")
    tmp.replace(root / STAMPS)


def regenerate(names: list[str], stamp_only: bool = False, root: Path = REPO) -> int:
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"no section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    failed = []
    for name in names or list(SECTIONS):
        section = SECTIONS[name]
        if not stamp_only:
            print(f"== {name}: {section.command} (about {section.minutes_here} min here)", flush=True)
            if subprocess.run(shlex.split(section.command), cwd=root).returncode != 0:
                failed.append(name)
                continue
            if not section.writes_doc:
                print(f"{name}: copy the numbers above into {section.file} (after `{section.marker}`), then "
                      f"`python -m semla_ros.cli.docs regenerate {name} --stamp-only`")
                continue
        stamp(name, root)
    if failed:
        raise RuntimeError(f"the command of {', '.join(failed)} failed; its stamp is unchanged")
    return 0


def docs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m semla_ros.cli.docs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="sections, commands, whether current")
    sub.add_parser("check", help="exit 1 when a section's recorded settings are not today's defaults")
    r = sub.add_parser("regenerate", help="run the sections' commands and stamp them")
    r.add_argument("names", nargs="*", help="sections (default: all)")
    r.add_argument("--stamp-only", action="store_true", help="only record that the sections are current now")
    args = parser.parse_args(argv)
    if args.command == "regenerate":
        return regenerate(args.names, args.stamp_only)
    found = problems()
    if args.command == "list":
        stamps = read_stamps()
        for s in SECTIONS.values():
            commit = (stamps.get(s.name, {}).get("commit") or "-").split()[0]
            state = "stale" if any(p.startswith(s.name + " ") or p.startswith(s.name + ":") for p in found) \
                else "current"
            print(f"{s.name:20s} {state:8s} {commit:14s} {s.file:20s} {s.command}")
        return 0
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    return run_command("semla-docs", docs, argv)


if __name__ == "__main__":
    sys.exit(main())
