"""Records: round trip, truncated last line, corruption, schema versions, DataFrame."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from harness.results import (
    SCHEMA_VERSION,
    Record,
    RecordWriter,
    ResultsError,
    TruncatedRecordWarning,
    load_results,
    metric_value,
    read_records,
    records_frame,
)


def make_record(variant="a", status="ok", value=1.5):
    metrics = {}
    if status == "ok":
        metrics = {
            "latency": metric_value(value, "ms", "lower", "time", median=value, iqr=0.1, n=3, samples=[value - 0.1, value, value + 0.1]),
            "score": metric_value(0.25, "", "higher", "quality"),
        }
    return Record(suite="s", variant=variant, params={"n": 4, "causal": True, "dtype": "float32"}, device="cpu",
                  status=status, reason="" if status == "ok" else "why", metrics=metrics, run_id="r1")


def test_record_round_trip(tmp_path):
    records = [make_record("a"), make_record("b", "oom"), make_record("c", "skipped")]
    with RecordWriter(tmp_path) as w:
        for r in records:
            w.write(r)
    back = read_records(tmp_path)
    assert back == records
    assert back[0].metrics["latency"].samples == [1.4, 1.5, 1.6]


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
    w = RecordWriter(tmp_path)
    w.write(make_record("a"))
    assert len(read_records(tmp_path)) == 1  # before close
    w.write(make_record("b"))
    assert len(read_records(tmp_path)) == 2
    w.close()


def test_nan_and_infinities_are_stored_exactly_and_distinctly(tmp_path):
    r = make_record()
    r.metrics["score"].value = math.nan
    r.metrics["latency"].value = math.inf
    r.metrics["latency"].samples = [1.0, -math.inf]
    data = json.loads(r.to_json())
    assert data["metrics"]["score"]["value"] == "NaN"
    assert data["metrics"]["latency"]["value"] == "Infinity"
    assert data["metrics"]["latency"]["samples"] == [1.0, "-Infinity"]
    with RecordWriter(tmp_path) as w:
        w.write(r)
    (back,) = read_records(tmp_path)
    assert math.isnan(back.metrics["score"].value) and back.metrics["score"].nonfinite
    assert back.metrics["latency"].value == math.inf and back.metrics["latency"].samples == [1.0, -math.inf]
    assert back.metrics["latency"].finite_value is None


def test_a_metric_value_of_the_wrong_type_is_refused():
    data = json.loads(make_record().to_json())
    data["metrics"]["score"]["value"] = "high"
    with pytest.raises(ValueError, match="must be a number"):
        Record.from_dict(data)


def test_truncated_last_line_is_tolerated_and_reported(tmp_path):
    with RecordWriter(tmp_path) as w:
        w.write(make_record("a"))
        w.write(make_record("b"))
    path = tmp_path / "records.jsonl"
    text = path.read_text()
    path.write_text(text + make_record("c").to_json()[:40])  # killed mid-write
    with pytest.warns(TruncatedRecordWarning, match="line 3 is truncated"):
        back = read_records(path)
    assert [r.variant for r in back] == ["a", "b"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(make_record("a").to_json() + "\n{not json\n" + make_record("b").to_json() + "\n")
    with pytest.raises(ResultsError, match="line 2 is not valid JSON"):
        read_records(path)


def test_other_schema_version_is_refused(tmp_path):
    data = json.loads(make_record().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "records.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(ResultsError, match="schema version"):
        read_records(tmp_path)


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        make_record(status="exploded")


def test_missing_run_folder_is_an_error(tmp_path):
    with pytest.raises(ResultsError, match="no such run folder"):
        load_results(tmp_path / "nope")
    with pytest.raises(ResultsError, match="not a run folder"):
        load_results(tmp_path)


def test_records_frame_is_long_with_one_row_per_metric(tmp_path):
    df = records_frame([make_record("a"), make_record("b", "failed")])
    ok = df[df.variant == "a"]
    assert sorted(ok.metric) == ["latency", "score"]
    lat = ok[ok.metric == "latency"].iloc[0]
    assert (lat["value"], lat["unit"], lat["better"], lat["median"], lat["n"]) == (1.5, "ms", "lower", 1.5, 3)
    assert lat["param.n"] == 4
    failed = df[df.variant == "b"]
    assert len(failed) == 1 and failed.iloc[0].status == "failed" and pd.isna(failed.iloc[0].metric)


def test_spread_warning_marks_numbers_too_uncertain_to_read():
    from harness.results import metric_value, spread_warning

    def lat(**kw):
        return metric_value(1.0, "ms", "lower", "time", **kw)

    assert spread_warning(lat(n=1)) == "1 sample: too few for a 95% CI"
    assert spread_warning(lat(n=30, ci_low=0.99, ci_high=1.01)) == ""
    assert spread_warning(lat(n=30, ci_low=0.7, ci_high=1.3)) == "95% CI is +-30% of the value"
    assert "rounds spread" in spread_warning(lat(n=30, ci_low=0.99, ci_high=1.01, round_spread=0.2))
    assert spread_warning(metric_value(0.9, "", "higher", "quality")) == ""
