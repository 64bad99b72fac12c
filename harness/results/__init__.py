"""Results: the Record schema, typed metric values, the JSONL store and the one loader of run
folders and baselines."""

from .records import (
    ENVIRONMENT_FILE,
    FAILED_STATUSES,
    RECORDS_FILE,
    RUN_FILE,
    SCHEMA_VERSION,
    STATUSES,
    MetricValue,
    Record,
    RecordWriter,
    ResultSet,
    ResultsError,
    json_safe,
    load_results,
    read_json,
    read_records,
    write_json,
)

__all__ = [
    "ENVIRONMENT_FILE",
    "FAILED_STATUSES",
    "RECORDS_FILE",
    "RUN_FILE",
    "SCHEMA_VERSION",
    "STATUSES",
    "MetricValue",
    "Record",
    "RecordWriter",
    "ResultSet",
    "ResultsError",
    "json_safe",
    "load_results",
    "read_json",
    "read_records",
    "write_json",
]
