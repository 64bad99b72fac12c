# Set-up and the two everyday jobs. `make quick` and `make test` each install what they need
# into .venv on first use (PyTorch comes from the package registry; no other downloads).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# asv-managed environments install from here offline (asv's virtualenv set-up installs pip,
# wheel, build, asv_runner, pympler and setuptools); the test of `asv continuous` uses it.
WHEELHOUSE := .cache/wheelhouse

.PHONY: setup quick test test-fast

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m pip download --quiet --dest $(WHEELHOUSE) pip wheel build asv_runner pympler "setuptools>=77"
	touch $(STAMP)

setup: $(STAMP)

# Every suite's quick profile on the GPU if there is one, else the CPU; prints the tables and
# writes a run folder under results/.
quick: setup
	$(BIN)/harness run --profile quick --device auto

# The browser test also needs Debian's chromium, the LaTeX export test pdflatex, and asv's
# web libraries (installed when possible; those tests skip with the reason otherwise).
test: setup
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest --durations=15

# The unit tests only, in about three minutes: leaves out the tests marked slow (real asv, the
# browser, whole-suite and command-line runs, worker processes killed or replaced, model
# training) and netns (they start Ray). `make test` runs them all, as CI does.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not netns"

# The nightly job on this machine, as the GitHub workflow runs it (scripts/nightly.sh, whose header
# lists every setting): the gate is `harness ab` of the last green night's commit (else HEAD~1)
# against HEAD, both measured now on this machine, so no baseline from another machine is needed;
# NIGHTLY_ANCHOR=COMMIT adds a weekly ab against that commit (on WEEKDAY, default Sunday) so slow
# creep shows; the stored baseline is compared for history (one from another CPU or GPU is a
# one-line note); then the report, the export tables, the commit in asv. Each night writes a fresh
# folder results/nightly-artifacts/<UTC stamp>/ (latest -> it); exit 1 on a regression.
# On a CPU-only machine: make nightly NIGHTLY_PROFILE=quick NIGHTLY_DEVICE=cpu (one thread);
# NIGHTLY_SUITES="attention" keeps it to some suites; NIGHTLY_GATE=baseline gates on the stored
# baseline instead (the default on DEVICE=cuda...). GREEN, WEEKDAY, ROUNDS... pass through.
NIGHTLY_PROFILE ?= nightly
NIGHTLY_DEVICE ?= auto
NIGHTLY_BASELINE ?=
NIGHTLY_SUITES ?=
NIGHTLY_THREADS ?=
NIGHTLY_ANCHOR ?= $(ANCHOR)
NIGHTLY_GATE ?= $(GATE)

.PHONY: nightly
nightly: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" PROFILE=$(NIGHTLY_PROFILE) DEVICE=$(NIGHTLY_DEVICE) \
		BASELINE=$(NIGHTLY_BASELINE) SUITES="$(NIGHTLY_SUITES)" \
		THREADS=$(NIGHTLY_THREADS) ANCHOR=$(NIGHTLY_ANCHOR) GATE=$(NIGHTLY_GATE) bash scripts/nightly.sh
