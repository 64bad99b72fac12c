"""Make asv's published HTML work offline: serve its CDN libraries from local copies.

``asv publish`` writes pages that load jQuery, flot, bootstrap and a few plugins from CDNs.
Where those hosts cannot be reached (a runner without internet access, an archived
artifact, the test machine), the pages show asv's "external dependencies failed to load"
error. :func:`localize` copies the libraries that ``scripts/install-browser.sh`` fetched from
the npm registry (into ``.cache/asv-web/``, or ``$HARNESS_ASV_ASSETS``) into
``HTML_DIR/vendor/`` and points the pages' script and style tags there, dropping the
integrity hashes of the CDN files. Run it after ``asv publish``:
``python -m harness.asv_html .asv/html``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from ..paths import PROJECT_ROOT

ENV_ASSETS = "HARNESS_ASV_ASSETS"
TAG_RE = re.compile(r"<(script|link)\b[^>]*?(src|href)=\"(https?://[^\"]+)\"[^>]*>", re.I)


def assets_dir() -> Path:
    return Path(os.environ.get(ENV_ASSETS) or PROJECT_ROOT / ".cache" / "asv-web")


def localize(html_dir: str | Path, assets: Path | None = None) -> list[str]:
    """Rewrite every page under ``html_dir``; returns the CDN files that have no local copy."""
    html_dir, assets = Path(html_dir), Path(assets or assets_dir())
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"{html_dir} holds no asv HTML (run 'asv publish' first)")
    vendor = html_dir / "vendor"
    missing: list[str] = []

    def swap(match: re.Match) -> str:
        url = match.group(3)
        name = url.rsplit("/", 1)[-1]
        local = assets / name
        if not local.is_file() or not name.endswith((".js", ".css")):
            if name.endswith((".js", ".css")) and name not in missing:
                missing.append(name)
            return match.group(0)
        vendor.mkdir(exist_ok=True)
        shutil.copyfile(local, vendor / name)
        text = match.group(0).replace(url, f"vendor/{name}")
        return re.sub(r"\s(integrity|crossorigin|referrerpolicy)=\"[^\"]*\"", "", text)

    for page in html_dir.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = TAG_RE.sub(swap, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
    if (assets / "fonts").is_dir():  # bootstrap's stylesheet asks for ../fonts/
        shutil.copytree(assets / "fonts", html_dir / "fonts", dirs_exist_ok=True)
    return missing


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.asv_html HTML_DIR", file=sys.stderr)
        return 2
    try:
        missing = localize(args[0])
    except FileNotFoundError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(f"harness: warning: no local copy of {', '.join(missing)} in {assets_dir()} "
              "(run scripts/install-browser.sh); those still load from their CDN", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
