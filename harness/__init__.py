"""A benchmark and evaluation harness for deep-learning techniques.

Suites declare comparable variants of a technique; the harness measures their speed, memory
and quality on the CPU or a GPU, stores every record, and renders comparison tables.
"""

from .declare.suite import (
    COUNT,
    HIGHER,
    LOWER,
    MEMORY,
    QUALITY,
    RATE,
    TIME,
    Band,
    Metric,
    Profile,
    Skip,
    Suite,
    SuiteDefinitionError,
    Timing,
    VariantRow,
    Workload,
    variant,
    variant_table,
)
from .results import MetricValue, Record, ResultSet, load_results
from .run.request import RunRequest
from .run.session import RunOptions, RunSession, run_suites

__version__ = "0.1.0"

__all__ = [
    "COUNT",
    "HIGHER",
    "LOWER",
    "MEMORY",
    "QUALITY",
    "RATE",
    "TIME",
    "Band",
    "Metric",
    "MetricValue",
    "Profile",
    "Record",
    "ResultSet",
    "RunOptions",
    "RunRequest",
    "RunSession",
    "Skip",
    "Suite",
    "SuiteDefinitionError",
    "Timing",
    "VariantRow",
    "Workload",
    "load_results",
    "run_suites",
    "variant",
    "variant_table",
]
