"""``harness.export`` is :mod:`harness.present.export`: the same module object, kept at this
path for code and asv benchmarks written against it."""

import sys

from .present import export as _export

sys.modules[__name__] = _export
