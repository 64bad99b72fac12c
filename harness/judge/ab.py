"""The verdicts of an ``harness ab`` folder: the two sides' run folders compared by the compare rules
(memory, quality, statuses, missing cases), with each case's time row judged on its paired rounds
(:mod:`harness.measure.paired`) instead of the unpaired rule."""

from __future__ import annotations

import json
from pathlib import Path

from ..key import CaseKey
from ..results import ResultSet, ResultsError, load_results
from .pairing import compare, sort_rows
from .stats import CompareOptions
from .verdicts import Comparison

AB_FILE = "ab.json"


def is_ab_folder(folder: Path) -> bool:
    return (folder / AB_FILE).is_file() and (folder / "a").is_dir() and (folder / "b").is_dir()


def read_ab(folder: Path) -> dict:
    try:
        doc = json.loads((folder / AB_FILE).read_text())
        doc["paired"]["cases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{folder / AB_FILE} cannot be read as an ab result: {exc}") from None
    return doc


def paired_comparison(folder: Path, options: CompareOptions | None = None) -> Comparison:
    """The comparison of ``folder/a`` and ``folder/b`` with the paired time verdicts of ``ab.json``."""
    doc = read_ab(folder)
    paired = doc["paired"]
    a, b = load_results(folder / "a", strict=False), load_results(folder / "b", strict=False)
    comparison = compare(a, b, options)
    # the unpaired rule's warning about single rounds does not apply: time rows are judged paired
    comparison.notes = [n for n in comparison.notes if not n.startswith("one round on each side")]
    by_key = {CaseKey.from_dict(c["key"]): c.get("verdict") for c in paired["cases"]}
    for row in comparison.rows:
        v = by_key.get(row.key)
        if not v or v.get("ratio") is None or row.kind != "time" or row.metric != "latency":
            continue
        if row.regression and "NaN or infinite" in row.note:  # a non-finite round fails whatever the ratios say
            continue
        row.ratio, row.ratio_low, row.ratio_high = v["ratio"], v["ratio_low"], v["ratio_high"]
        row.verdict = v["verdict"]
        row.a_rounds = row.b_rounds = v["rounds"]
        row.noise = None
        row.note = (f"paired: median of {v['rounds']} paired ratios B/A, 95% CI [{v['ratio_low']:.3f}, "
                    f"{v['ratio_high']:.3f}]")
    comparison.time_rule = ("a time change is judged on the paired rounds: the median ratio B/A past the threshold "
                            "and its 99% interval clear of 1 (slower, faster); its 95% interval inside the "
                            "threshold is the same")
    sort_rows(comparison.rows)
    for side in ("a", "b"):
        for label in paired.get(f"only_{side}") or []:
            comparison.notes.append(f"only on side {side.upper()}, not paired: {label}")
    comparison.a_label = doc.get("a_label") or comparison.a_label
    comparison.b_label = doc.get("b_label") or comparison.b_label
    return comparison


def load_ab(folder: Path, options: CompareOptions | None = None) -> tuple[ResultSet, Comparison]:
    """(side B's run, the paired comparison) of an ``harness ab`` folder (what ``harness report`` shows)."""
    comparison = paired_comparison(folder, options)
    return load_results(folder / "b", strict=False), comparison
