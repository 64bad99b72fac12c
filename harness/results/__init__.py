"""Results, split by job: :mod:`.schema` (the Record, typed metric values, JSON encoding),
:mod:`.store` (the append-only JSONL store of a run folder), :mod:`.rounds` (rounds as runs of a
case) and :mod:`.loader` (the one versioned loader of run folders and baselines)."""

from .loader import (BASELINE_SCHEMA, BASELINE_SCHEMA_VERSION, READABLE_BASELINE_SCHEMA_VERSIONS, ResultSet,
                     load_baseline_file, load_results, records_frame, split_keys)
from .rounds import CaseRuns, aggregate_rounds, group_runs
from .schema import (FAILED_STATUSES, NONFINITE, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, STATUSES, WIDE_SPREAD,
                     MetricValue, Record, ResultsError, decode_float, encode_float, json_safe, metric_value,
                     spread_warning)
from .store import (ENVIRONMENT_FILE, RECORDS_FILE, RUN_FILE, RecordWriter, TruncatedRecordWarning, read_json,
                    read_records, write_json)

__all__ = [
    "BASELINE_SCHEMA",
    "BASELINE_SCHEMA_VERSION",
    "CaseRuns",
    "ENVIRONMENT_FILE",
    "FAILED_STATUSES",
    "MetricValue",
    "NONFINITE",
    "READABLE_BASELINE_SCHEMA_VERSIONS",
    "READABLE_SCHEMA_VERSIONS",
    "RECORDS_FILE",
    "RUN_FILE",
    "Record",
    "RecordWriter",
    "ResultSet",
    "ResultsError",
    "SCHEMA_VERSION",
    "STATUSES",
    "TruncatedRecordWarning",
    "WIDE_SPREAD",
    "aggregate_rounds",
    "decode_float",
    "encode_float",
    "group_runs",
    "json_safe",
    "load_baseline_file",
    "load_results",
    "metric_value",
    "read_json",
    "read_records",
    "records_frame",
    "split_keys",
    "spread_warning",
    "write_json",
]
