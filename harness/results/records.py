"""The names this module held before results were split by job; import them from
:mod:`harness.results` (this alias keeps older imports working)."""

from . import *  # noqa: F401,F403
from . import __all__  # noqa: F401
