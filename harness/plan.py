"""From suites, a profile and filters to the list of Cases to run."""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from typing import Any

from .declare.registry import suggest
from .declare.suite import Suite, Timing
from .key import CaseKey, kv_text


class PlanError(Exception):
    """A profile, param or filter given by the user does not fit the suite."""


@dataclass(frozen=True)
class Case:
    """One (suite, variant, params, device) point, with its :class:`~harness.key.CaseKey` (made
    here, once; every record of the case carries it)."""

    suite: str
    variant: str
    params: tuple[tuple[str, Any], ...]
    device: str
    grid_params: tuple[str, ...] = ()
    timing: Timing = field(default_factory=Timing)
    key: CaseKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", CaseKey.split(self.suite, self.variant, self.params, self.grid_params))

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def setup_key(self) -> tuple:
        """Cases with the same key share one ``prepare`` result (same suite grid point)."""
        return (self.suite, self.device, tuple((k, v) for k, v in self.params if k in self.grid_params))

    def label(self) -> str:
        return f"{self.suite}/{self.variant} {kv_text(self.params_dict, ' ')}".strip()


def parse_value(text: str, like: list) -> Any:
    """Parse a command-line value to the type of the declared values ``like``."""
    sample = like[0] if like else text
    if isinstance(sample, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean (use true or false)")
    if isinstance(sample, int):
        return int(text)
    if isinstance(sample, float):
        return float(text)
    return text


def typed_value(value: Any, like: list) -> Any:
    """A param value of the type of the declared values ``like``: text (the command line, the
    environment, run folders of older versions) is parsed; a typed value is kept as it is.

    A JSON list stands for a tuple where the declared values are tuples (how ``run.json`` holds
    them). ValueError when the value cannot be of that type.
    """
    sample = like[0] if like else value
    if isinstance(value, str):
        return parse_value(value, like)
    if isinstance(sample, bool) or isinstance(value, bool):
        if isinstance(sample, bool) and isinstance(value, bool):
            return value
    elif isinstance(sample, int):
        if isinstance(value, int):
            return value
    elif isinstance(sample, float):
        if isinstance(value, (int, float)):
            return float(value)
    elif isinstance(sample, tuple) and isinstance(value, list):
        return tuple(value)
    elif isinstance(sample, str):
        return str(value)
    else:
        return value
    raise ValueError(f"{value!r} is not a {type(sample).__name__}")


def parse_param_item(item: str) -> tuple[str, tuple[str, ...]]:
    """``"seq_len=128,256"`` -> ("seq_len", ("128", "256")); PlanError with one line otherwise."""
    name, sep, vals = str(item).partition("=")
    name = name.strip()
    values = tuple(v.strip() for v in vals.split(",") if v.strip())
    if not sep or not name or not values:
        raise PlanError(f"--param {item!r}: expected NAME=V1,V2")
    return name, values


def merge_param_items(items) -> dict[str, list]:
    """(name, values) pairs -> {name: values}, the values of a repeated name joined in order."""
    out: dict[str, list] = {}
    for name, values in items or ():
        out.setdefault(name, []).extend(values)
    return out


def parse_param_overrides(items: list[str] | None) -> dict[str, list[str]]:
    """``["seq_len=128,256", "causal=true"]`` -> {"seq_len": ["128", "256"], ...}."""
    return merge_param_items(parse_param_item(item) for item in items or ())


def _suite_overrides(cls: type[Suite], overrides: dict[str, Any]) -> dict[str, tuple]:
    """The overrides of the params ``cls`` declares, as values of their declared types."""
    name, variants, known = cls.suite_name(), cls.variants(), cls.all_param_names()
    typed: dict[str, tuple] = {}
    for k, values in overrides.items():
        if k not in known:
            continue  # checked across all suites by the caller
        declared = list(cls.grid.get(k) or next(s.params[k] for s in variants.values() if k in s.params))
        try:
            typed[k] = tuple(typed_value(v, declared) for v in values)
        except ValueError as exc:
            raise PlanError(f"--param {k}: malformed value for suite {name!r}: {exc}") from None
        repeated = [v for i, v in enumerate(typed[k]) if v in typed[k][:i]]
        if repeated:
            raise PlanError(f"--param {k}: value {repeated[0]!r} is given twice")
    return typed


def type_overrides(suites: list[type[Suite]], overrides: dict[str, Any] | None) -> dict[str, tuple]:
    """Param overrides (text or typed) -> {name: tuple of values of the declared type}.

    Every name must be a param of one of ``suites``; suites that declare the same name must
    agree on its values' type.
    """
    overrides = dict(overrides or {})
    check_overrides(suites, overrides)
    typed: dict[str, tuple] = {}
    for cls in suites:
        for k, values in _suite_overrides(cls, overrides).items():
            if typed.setdefault(k, values) != values or list(map(type, typed[k])) != list(map(type, values)):
                raise PlanError(f"--param {k}: the selected suites declare {k} with values of different types")
    return typed


def _grid(axes: dict[str, tuple]) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


def plan_suite(
    cls: type[Suite],
    profile: str,
    device: str,
    pattern: str | None = None,
    overrides: dict[str, Any] | None = None,
    only_variants: list[str] | None = None,
) -> list[Case]:
    """Cases of one suite for a profile, filtered by a -k pattern, variant names and --param overrides."""
    name = cls.suite_name()
    try:
        prof = cls.profile(profile)
    except KeyError:
        raise PlanError(f"suite {name!r} has no profile {profile!r}{suggest(profile, cls.profile_names())}") from None
    variants = cls.variants()
    grid_axes = {k: tuple(v) for k, v in cls.grid.items()}
    for k, v in prof.grid.items():
        if k in grid_axes:
            grid_axes[k] = tuple(v)
    parsed = _suite_overrides(cls, overrides or {})
    for k, v in parsed.items():
        if k in grid_axes:
            grid_axes[k] = v
    timing = prof.timing or cls.timing
    chosen = list(prof.variants) if prof.variants is not None else list(variants)
    if only_variants:
        chosen = [v for v in variants if v in only_variants]
    cases: list[Case] = []
    for point in _grid(grid_axes):
        for vname in chosen:
            spec = variants[vname]
            vaxes = {k: tuple(v) for k, v in spec.params.items()}
            for k in vaxes:
                if k in prof.grid:
                    vaxes[k] = tuple(prof.grid[k])
                if k in parsed:
                    vaxes[k] = parsed[k]
            for vpoint in _grid(vaxes):
                params = {**point, **vpoint}
                case = Case(
                    suite=name,
                    variant=vname,
                    params=tuple(params.items()),
                    device=device,
                    grid_params=tuple(point),
                    timing=timing,
                )
                if pattern and not matches(case, pattern):
                    continue
                cases.append(case)
    return cases


def matches(case: Case, pattern: str) -> bool:
    """-k semantics: a glob or substring over 'suite/variant k=v ...'; ' and '/' or '/'not ' work."""
    expr = pattern.strip()
    for alt in expr.split(" or "):
        terms = [t.strip() for t in alt.split(" and ")]
        if all(_term(case, t) for t in terms if t):
            return True
    return False


def _term(case: Case, term: str) -> bool:
    if term.startswith("not "):
        return not _term(case, term[4:].strip())
    hay = case.label()
    if any(c in term for c in "*?["):
        return fnmatch.fnmatch(hay, f"*{term}*")
    return term in hay or term == case.variant


def check_overrides(suites: list[type[Suite]], overrides: dict[str, Any]) -> None:
    """Every overridden param must exist in at least one of the selected suites."""
    known: set[str] = set()
    for cls in suites:
        known.update(cls.all_param_names())
    for k in overrides:
        if k not in known:
            raise PlanError(f"unknown param {k!r}{suggest(k, sorted(known))}")


def check_variants(suites: list[type[Suite]], names: list[str]) -> None:
    """Every variant named with --variant must exist in at least one of the selected suites."""
    known: list[str] = []
    for cls in suites:
        known += [v for v in cls.variants() if v not in known]
    for name in names:
        if name not in known:
            raise PlanError(f"unknown variant {name!r}{suggest(name, known)}")


def plan_cases(
    suites: list[type[Suite]],
    profile: str,
    device: str,
    pattern: str | None = None,
    overrides: dict[str, Any] | None = None,
    only_variants: list[str] | None = None,
) -> list[Case]:
    """Cases of several suites, after checking that every param, variant and profile exists."""
    overrides = overrides or {}
    check_overrides(suites, overrides)
    check_variants(suites, only_variants or [])
    cases: list[Case] = []
    for cls in suites:
        if profile not in cls.profile_names():
            raise PlanError(f"suite {cls.suite_name()!r} has no profile {profile!r}{suggest(profile, cls.profile_names())}")
        cases += plan_suite(cls, profile, device, pattern, overrides, only_variants)
    if not cases:
        raise PlanError(f"no case matches -k {pattern!r}" if pattern else "no case matches the selection")
    return cases


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N); PlanError with one line otherwise."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise PlanError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    return i, n


def shard_cases(cases: list[Case], index: int, count: int) -> list[Case]:
    """The ``index``-th of ``count`` shards (1-based): grid points dealt round-robin in plan order.

    Every variant of a grid point lands in the same shard (they share ``prepare`` and are
    compared with each other); the same plan always gives the same shards, and the ``count``
    shards together hold every case exactly once.
    """
    points: dict[tuple, int] = {}
    for case in cases:
        points.setdefault(case.setup_key, len(points))
    return [c for c in cases if points[c.setup_key] % count == index - 1]
