"""``python -m harness.asv_html HTML_DIR`` runs :mod:`harness.present.asv_html` (the documented path)."""

import sys

from .present import asv_html as _asv_html

if __name__ == "__main__":
    sys.exit(_asv_html.main())
else:
    sys.modules[__name__] = _asv_html
