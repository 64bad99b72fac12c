"""asv's HTML and the harness report, opened in headless Debian chromium.

The asv pages are served from 127.0.0.1 (they load their JSON with requests, which file://
pages may not make), with asv's CDN libraries replaced by local copies
(``harness.asv_html``). The checks read the DOM after a virtual-time budget: the benchmark
grid lists every attention metric, a graph page draws its flot canvas with a line per
variant, and every plot image of the report decodes. Screenshots go to test-artifacts/.
Skipped, with the reason, only where chromium (or asv's libraries) cannot be installed.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from asv_helpers import asv_project
from harness.present.asv_html import assets_dir, localize
from harness.paths import PROJECT_ROOT
from synthetic_runs import standard_run

pytestmark = pytest.mark.slow  # real asv and a headless browser

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-ok', ok ? 'yes' : 'no');
});
</script>"""


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@functools.lru_cache(maxsize=1)
def _install() -> str:
    """Run the project's own set-up script once; returns what it printed."""
    proc = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "install-browser.sh")], capture_output=True,
                          text=True, timeout=1200)
    return (proc.stdout + proc.stderr).strip()


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path is None or not (assets_dir() / ".complete").is_file():
        log = _install()
        path = _find_chromium()
        if path is None:
            pytest.skip(f"chromium is not installed and scripts/install-browser.sh could not install it: {log[-300:]}")
    return path


class _Browser:
    def __init__(self, exe: str, tmp: Path):
        self.exe, self.tmp, self.n = exe, tmp, 0

    def _run(self, url: str, *extra: str) -> str:
        self.n += 1
        profile = self.tmp / f"profile-{self.n}"
        cmd = [self.exe, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    def dom(self, url: str) -> str:
        return self._run(url, "--dump-dom")

    def screenshot(self, url: str, path: Path, size: str = "1400,1100") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._run(url, f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars")
        assert path.is_file()
        return path


def _not_blank(png: Path) -> bool:
    from matplotlib.image import imread

    pixels = imread(str(png))
    return pixels.size > 0 and float(pixels.std()) > 0.01


@pytest.fixture
def browser(chromium, tmp_path):
    return _Browser(chromium, tmp_path)


@pytest.fixture(scope="module")
def served_asv_html(chromium, tmp_path_factory):
    if not (assets_dir() / ".complete").is_file():
        pytest.skip(f"asv's web libraries could not be fetched into {assets_dir()}: {_install()[-300:]}")
    project = asv_project(tmp_path_factory.getbasetemp() / "asv")
    html = tmp_path_factory.mktemp("asv-html") / "html"
    shutil.copytree(project.html_dir, html)
    assert localize(html) == []
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_asv_grid_lists_every_attention_metric(browser, served_asv_html):
    dom = browser.dom(f"{served_asv_html}/index.html")
    assert "airspeed velocity error" not in dom
    for metric in ("latency", "peak_memory", "tflops", "throughput", "rel_error"):
        assert f"attention.Attention.track_{metric}" in dom


def test_asv_graph_renders(browser, served_asv_html):
    url = f"{served_asv_html}/index.html#attention.Attention.track_latency"
    dom = browser.dom(url)
    assert 'class="flot-base"' in dom  # flot drew the graph canvas
    assert "flot-tick-label" in dom  # with its axes
    assert "softmax" in dom  # the variant param is offered
    assert "attention: latency [ms]" in dom  # the benchmark's pretty name with its unit
    shot = browser.screenshot(url, ARTIFACTS / "asv-attention-latency.png")
    assert _not_blank(shot)
    probe = f"{served_asv_html}/index.html#asvprobe.AsvProbe.track_latency"
    assert 'class="flot-base"' in browser.dom(probe)
    browser.screenshot(probe, ARTIFACTS / "asv-probe-latency-regression.png")


REPORT_CHECK = """<script>
window.addEventListener('load', function () {
  var body = document.body;
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  body.setAttribute('data-images', String(imgs.length));
  body.setAttribute('data-images-ok', ok ? 'yes' : 'no');
  var details = document.getElementById('all-verdicts');
  var table = details.querySelector('table.verdicts');
  function visible(el) { return el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null; }
  body.setAttribute('data-table-visible-closed', visible(table) ? 'yes' : 'no');
  details.querySelector('summary').click();
  body.setAttribute('data-expanded', details.open ? 'yes' : 'no');
  body.setAttribute('data-table-visible-open', visible(table) ? 'yes' : 'no');
  body.setAttribute('data-table-height-open', String(table.getBoundingClientRect().height));
  var box = document.getElementById('verdict-filter');
  box.value = 'slower';
  box.dispatchEvent(new Event('input'));
  body.setAttribute('data-filtered', document.getElementById('verdict-shown').textContent);
  var first = document.querySelector('section#summary').compareDocumentPosition(document.querySelector('figure.plot'));
  body.setAttribute('data-summary-first', (first & Node.DOCUMENT_POSITION_FOLLOWING) ? 'yes' : 'no');
});
</script>"""


def _attr(dom: str, name: str) -> str:
    return dom.split(f'{name}="')[1].split('"')[0]


def test_report_opens_with_what_needs_attention(browser, tmp_path, monkeypatch):
    """A run with a failed case, a quality-band violation and a 30% slower case, reported
    against a clean baseline: the summary above every plot lists exactly those three cases,
    worst first; every plot image decodes; the collapsed full verdict table expands on a
    click and its filter narrows it. Screenshots of the first screen of a laptop (1366x768)
    and of the page go to test-artifacts/."""
    from harness.cli import main
    from synthetic_runs import troubled_run

    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(tmp_path / "b"))
    assert main(["baseline", "save", str(troubled_run(tmp_path / "base", seed=0, troubled=False)), "--name", "ref"]) == 0
    run = troubled_run(tmp_path / "run", seed=1)
    report = tmp_path / "report.html"
    assert main(["report", str(run), "--against", "ref", "-o", str(report)]) == 1
    checked = tmp_path / "report-checked.html"
    checked.write_text(report.read_text().replace("</body>", REPORT_CHECK + "</body>"))
    dom = browser.dom(checked.as_uri())
    summary = dom.split('<table class="attention" id="attention">')[1].split("</table>")[0]
    cases = [c.split('"')[0] for c in summary.split('data-case="')[1:]]
    assert cases == ["toy/base n=64", "toy/fast n=1024", "toy/fast n=256"]
    assert [v.split("<")[0] for v in summary.split('<td class="v-')[1:]] == [
        'failed">failed', 'out-of-band">out-of-band', 'slower">slower']
    assert _attr(dom, "data-summary-first") == "yes"
    assert _attr(dom, "data-images-ok") == "yes"
    assert int(_attr(dom, "data-images")) == dom.count('<figure class="plot"') >= 5
    assert _attr(dom, "data-table-visible-closed") == "no"
    assert _attr(dom, "data-expanded") == "yes" and _attr(dom, "data-table-visible-open") == "yes"
    assert float(_attr(dom, "data-table-height-open")) > 100
    assert _attr(dom, "data-filtered") == "1"  # the one slower row
    if ARTIFACTS.is_dir() or ARTIFACTS.parent.is_dir():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(report, ARTIFACTS / "report.html")
    fold = browser.screenshot(report.as_uri(), ARTIFACTS / "report-first-screen.png", size="1366,768")
    assert _not_blank(fold)
    shot = browser.screenshot(report.as_uri(), ARTIFACTS / "report.png", size="1366,2400")
    assert _not_blank(shot)
