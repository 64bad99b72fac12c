"""The shipped baseline matches the suites: a stale baseline fails here, not in a user's nightly.

``baselines/cpu-quick.json`` must hold, for every suite, the cases the quick profile plans on
the CPU today, measured under the suite's current declaration (variants, grid, metrics with
their units, directions and kinds, quality bands) and its current measured workload
(``Suite.benchmark_version()``: inputs, grid and metric definitions, not variant code).
"""

from __future__ import annotations

import json

import pytest

from harness.plan import plan_cases
from harness.declare.registry import discover
from harness.results import load_results

BASELINE = "cpu-quick"
REGENERATE = ("regenerate it from a clean tree: harness run --profile quick --device cpu --threads 1 --rounds 3 "
              "--out R && harness baseline save R --name cpu-quick --force")
DECLARED = ("variants", "grid", "bands", "benchmark_version")


@pytest.fixture(scope="module")
def baseline():
    return load_results(BASELINE)


@pytest.fixture(scope="module")
def registry():
    return discover()


def _metrics(decl: dict) -> dict:
    return {n: {k: m.get(k) for k in ("unit", "better", "kind")} for n, m in (decl.get("metrics") or {}).items()}


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def stale_reasons(suite_cls, baseline) -> list[str]:
    """What the baseline holds of this suite that no longer matches it (empty when current)."""
    name = suite_cls.suite_name()
    stored = baseline.suites_meta.get(name)
    if stored is None:
        return [f"suite {name!r} is not in the baseline"]
    now = _plain(suite_cls.declaration())
    reasons = [f"{field} changed" for field in DECLARED if now.get(field) != _plain(stored.get(field))]
    if _metrics(now) != _metrics(stored):
        reasons.append("metric declarations changed")
    planned = {(c.variant, json.dumps(c.params_dict, sort_keys=True, default=str))
               for c in plan_cases([suite_cls], "quick", "cpu")}
    held = {(r.variant, json.dumps(r.params, sort_keys=True, default=str)) for r in baseline.records if r.suite == name}
    if planned != held:
        reasons.append(f"the quick plan has {len(planned - held)} case(s) the baseline lacks and the baseline "
                       f"{len(held - planned)} the plan no longer has")
    return reasons


def test_baseline_was_made_as_its_readme_says(baseline):
    assert baseline.rounds >= 3, "the baseline needs several rounds (the noise between runs)"
    assert baseline.meta.get("threads") == 1
    assert not (baseline.environment.get("git") or {}).get("dirty"), "made from a dirty tree"


def test_every_suite_matches_the_baseline(baseline, registry):
    stale = {}
    for cls in (registry.get(n) for n in registry.names()):
        reasons = stale_reasons(cls, baseline)
        if reasons:
            stale[cls.suite_name()] = reasons
    assert not stale, f"baseline {BASELINE} is stale: {stale}; {REGENERATE}"


def test_a_changed_declaration_is_caught(baseline, registry):
    """The check itself: a suite whose grid gained a value, or whose measured workload changed,
    no longer matches."""
    cls = registry.get("activations")

    grown = type("Activations", (cls,), {"grid": {**cls.grid, "size": [*cls.grid["size"], 3]},
                                         "__module__": cls.__module__})
    assert "grid changed" in stale_reasons(grown, baseline)
    bumped = type("Activations", (cls,), {"inputs_version": "inputs-v2", "__module__": cls.__module__})
    assert "benchmark_version changed" in stale_reasons(bumped, baseline)
