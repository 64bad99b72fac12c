"""asv's benchmark directory: one benchmark class per suite under ``suites/``.

The classes are built by :func:`harness.asv_adapter.benchmark_classes` when asv imports this
package (in a benchmark process, from the value the suite's setup_cache measured, without
importing the suites); suites themselves know nothing of asv. See the README's section on asv.
"""

from harness.asv_adapter import benchmark_classes

globals().update(benchmark_classes())
