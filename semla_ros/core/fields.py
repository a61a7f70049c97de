"""Settings declared once: dataclass fields whose metadata says everything about them (peft style).

Why: a setting's type, default, range, choices, whether it is live and its help text used to be written
again in each place that needed them (a hand-written check per dataclass, the ROS parameter table, each
command-line tool, config/semla.yaml) and drifted apart. Here they are written once, on the field:

    top_k: int = setting(5, help="Adapters fused per swap", low=1, high=64)

and everything else is derived from that: `validate` (called by the dataclasses' __post_init__, so a
settings object with a bad value cannot exist), `add_options` / `option_values` (argparse), and the ROS
parameter table and config/semla.yaml (semla_ros/ros/parameters.py). The type is the annotation; the
choices of a `Literal[...]` annotation are its arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Any, Literal

MISSING = dataclasses.MISSING


def setting(default: Any = MISSING, *, help: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, live: bool = True, pattern: str | None = None,
            pattern_help: str | None = None, doc: str | None = None, default_factory: Any = MISSING,
            option: bool = True) -> Any:
    """A dataclass field described by its metadata.

    low/high: inclusive bounds (low_open / high_open make them exclusive; the ROS layer needs inclusive ones).
    live: the running node can change it without a restart. pattern: a regular expression a string must match
    (pattern_help: what it means, for the error message).
    doc: the longer text of config/semla.yaml (default: help). option: False keeps it off the command line.
    """
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
                "live": live, "pattern": pattern, "pattern_help": pattern_help, "doc": doc or help, "option": option}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One declared setting, resolved: its annotation read into a type and choices."""

    name: str
    kind: type                      # int, float, str, bool, tuple (of str) or a dataclass
    optional: bool                  # None is allowed
    default: Any
    choices: tuple = ()
    help: str = ""
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    live: bool = True
    pattern: str | None = None
    pattern_help: str | None = None
    option: bool = True

    def range_text(self) -> str:
        """'[1, 64]', '(0, inf)', ...: '(' and ')' where the bound is excluded."""
        if self.low is None and self.high is None:
            return ""
        left = "(-inf" if self.low is None else ("(" if self.low_open else "[") + _number(self.low)
        right = "inf)" if self.high is None else _number(self.high) + (")" if self.high_open else "]")
        return f"{left}, {right}"


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e7 else f"{value:g}"


def _resolve(hint) -> tuple[type, bool, tuple]:
    """(kind, optional, choices) of an annotation."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"unsupported settings annotation {hint!r}")
        hint, origin = args[0], typing.get_origin(args[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), optional, choices
    if origin is tuple:
        return tuple, optional, ()
    return hint, optional, ()


@functools.lru_cache(maxsize=None)
def fields(cls) -> tuple[FieldInfo, ...]:
    """The declared fields of a settings dataclass, in order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional, choices = _resolve(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        meta = dict(f.metadata)
        help_text: str = meta.get("help", "")
        out.append(FieldInfo(name=f.name, kind=kind, optional=optional, default=default, choices=choices,
                             help=help_text, doc=meta.get("doc", help_text),
                             low=meta.get("low"), high=meta.get("high"), low_open=meta.get("low_open", False),
                             high_open=meta.get("high_open", False), live=meta.get("live", True),
                             pattern=meta.get("pattern"), pattern_help=meta.get("pattern_help"),
                             option=meta.get("option", True)))
    return tuple(out)


def field_info(cls, name: str) -> FieldInfo:
    return next(f for f in fields(cls) if f.name == name)


def check(info: FieldInfo, value: Any) -> str | None:
    """Why `value` is not acceptable for the field ("name: ..."), or None."""
    name = info.name
    if value is None:
        return None if info.optional else f"{name}: must be given, got None"
    if dataclasses.is_dataclass(info.kind):
        return None if isinstance(value, info.kind) else f"{name}: expected {info.kind.__name__}, got {value!r}"
    if info.kind is bool:
        return None if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_") else \
            f"{name}: expected bool, got {value!r}"
    if info.kind in (int, float):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if (info.kind is int and not integral) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"{name}: expected {info.kind.__name__}, got {value!r}"
        if not math.isfinite(value):
            return f"{name}: {value} is not finite"
        number = float(value)
        too_low = info.low is not None and (number <= info.low if info.low_open else number < info.low)
        too_high = info.high is not None and (number >= info.high if info.high_open else number > info.high)
        if too_low or too_high:
            return f"{name}: {value!r} outside {info.range_text()}"
    if info.kind is str and not isinstance(value, str):
        return f"{name}: expected str, got {value!r}"
    if info.kind is tuple and not isinstance(value, (tuple, list)):
        return f"{name}: expected a list, got {value!r}"
    if info.choices and value not in info.choices:
        return f"{name}: {value!r} is not one of {', '.join(map(str, info.choices))}"
    if info.pattern and not re.fullmatch(info.pattern, value):
        return f"{name}: {value!r} is not {info.pattern_help or info.pattern}"
    return None


def validate(instance) -> None:
    """ValueError naming the first field whose value breaks its declaration (type, range, choices, pattern)."""
    kind: type = type(instance)  # a `type` annotation: mypy sees type[Any] as not Hashable (python/mypy#11470)
    for info in fields(kind):
        reason = check(info, getattr(instance, info.name))
        if reason:
            raise ValueError(reason)


def replace(instance, **changes):
    """A copy with `changes` (validated by the copy's __post_init__); unknown names raise ValueError."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(instance)}
    if unknown:
        raise ValueError(f"unknown {type(instance).__name__} fields: {sorted(unknown)}")
    return dataclasses.replace(instance, **changes)


def positive_int(text: str) -> int:
    """argparse type of a count that must be given as at least 1 (`--max-images 0` is a mistake, not "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1 (leave the option out for all)")
    return value


def option_name(name: str, prefix: str = "") -> str:
    return "--" + (prefix + name).replace("_", "-")


def _options(cls, only, exclude) -> list[FieldInfo]:
    """The fields that are command-line options (not nested dataclasses, not option=False)."""
    return [info for info in fields(cls) if info.option and not dataclasses.is_dataclass(info.kind)
            and info.name not in exclude and (only is None or info.name in only)]


def add_options(parser, cls, *, prefix: str = "", only=None, exclude=(), defaults: bool = True,
                aliases: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> None:
    """One `--name` option per declared field of `cls` (nested dataclasses and option=False fields left out).

    prefix: put before each name (dest and option). defaults=False: every option defaults to None
    (`option_values` then returns only those given), for tools whose defaults come from elsewhere
    (semla-relabel --demo: the demo node's settings). aliases: field -> a further option string.
    overrides: field -> the tool's own default (an offline tool defaults to the CPU and the demo navigator).
    """
    for info in _options(cls, only, exclude):
        default = (overrides or {}).get(info.name, info.default) if defaults else None
        help_text = info.help + ("" if not info.range_text() else f"; {info.range_text()}")
        if defaults:
            help_text += " (default: %(default)s)"
        kwargs: dict[str, Any] = {"dest": prefix + info.name, "default": default, "help": help_text}
        if info.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif info.kind is tuple:
            kwargs.update(nargs="+", default=list(default) if defaults and default is not None else default)
        else:
            kwargs["type"] = info.kind
        if info.choices:
            kwargs["choices"] = info.choices
        names = [option_name(info.name, prefix)] + ([aliases[info.name]] if aliases and info.name in aliases else [])
        parser.add_argument(*names, **kwargs)


def option_values(args: argparse.Namespace, cls, *, prefix: str = "", only=None, exclude=()) -> dict[str, Any]:
    """The fields of `cls` that `add_options` put on `args` (None values, options not given, left out)."""
    out = {}
    for info in _options(cls, only, exclude):
        value = getattr(args, prefix + info.name, None)
        if value is not None:
            out[info.name] = tuple(value) if info.kind is tuple else value
    return out
