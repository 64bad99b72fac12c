#!/usr/bin/env bash
# The nightly job (the GitHub workflow and `make nightly` both run this script):
#   1. run a profile of every suite (default: nightly on the GPU) into a run folder,
#   2. compare it with the stored baseline (verdict table in markdown and JSON),
#   3. write the HTML report and the export tables,
#   4. record the run's records as the commit's results in asv's history (asv run --python=same
#      with HARNESS_ASV_RECORDS: nothing is measured a second time) and publish asv's HTML,
#   5. exit 1 when the comparison found a regression (missing cases included) or a case failed,
#      ran out of memory, timed out or crashed; 2 when a step failed; else 0.
# Every artifact is written before the exit code is decided, so a red night still has them.
#
# Settings (environment): PROFILE (nightly), DEVICE (auto), BASELINE (a name, looked up in
# $HARNESS_BASELINES_DIR, ./baselines/, then the shipped baselines/ as `harness baseline list` shows,
# or a path; default <cpu|gpu>-<PROFILE>, skipped when absent), OUT (run folder),
# ARTIFACTS (results/nightly-artifacts), ASV_MACHINE (this host's name), SUITES (names, space-
# separated, or suite files; default all), THREADS (torch CPU threads; default 1 on DEVICE=cpu, as
# baselines/cpu-quick.json was measured), ROUNDS (passes over all cases, default 3: compare reads
# the spread between them as the noise between runs), CASE_TIMEOUT (seconds per case, default 1800; every case
# runs in an isolated worker), SKIP_ASV=1 to leave out asv. asv reads $HARNESS_ASV_PARAM/_K too.
set -uo pipefail

PROFILE="${PROFILE:-nightly}"
DEVICE="${DEVICE:-auto}"
STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="${OUT:-results/nightly-$STAMP}"
ARTIFACTS="${ARTIFACTS:-results/nightly-artifacts}"
ASV_MACHINE="${ASV_MACHINE:-$(hostname)}"
HARNESS="${HARNESS:-harness}"
ASV="${ASV:-asv}"
PYTHON="${PYTHON:-python}"
CASE_TIMEOUT="${CASE_TIMEOUT:-1800}"
ROUNDS="${ROUNDS:-3}"
if [ "$DEVICE" = "cpu" ] && [ -z "${THREADS:-}" ]; then THREADS=1; fi

status=0
fail() { echo "nightly: $*" >&2; [ "$status" -eq 0 ] && status=2; }

mkdir -p "$ARTIFACTS"

echo "nightly: running profile $PROFILE on device $DEVICE into $OUT"
# shellcheck disable=SC2086  # SUITES is a space-separated list of suite names
"$HARNESS" run ${SUITES:-} --profile "$PROFILE" --device "$DEVICE" --out "$OUT" --quiet --no-progress \
    --isolate --timeout "$CASE_TIMEOUT" --rounds "$ROUNDS" ${THREADS:+--threads "$THREADS"}
rc=$?
if [ "$rc" -ge 2 ] || [ ! -f "$OUT/run.json" ]; then
    fail "harness run failed (exit $rc)"
    exit "$status"
fi
# exit 1: a case failed, ran out of memory, timed out or crashed (recorded; the night goes on)
[ "$rc" -eq 1 ] && cases_failed=1

device_kind=cpu
grep -q '"device": "cuda' "$OUT/run.json" && device_kind=gpu
explicit_baseline=1
if [ -z "${BASELINE:-}" ]; then
    BASELINE="$device_kind-$PROFILE"
    explicit_baseline=0
fi

against=()
"$HARNESS" baseline list > "$ARTIFACTS/baselines.txt" 2>/dev/null
if [ "$explicit_baseline" -eq 1 ] || grep -q "^$BASELINE:" "$ARTIFACTS/baselines.txt"; then
    "$HARNESS" compare "$BASELINE" "$OUT" --fail-on-missing --format json --output "$ARTIFACTS/compare.json"
    rc=$?
    "$HARNESS" compare "$BASELINE" "$OUT" --fail-on-missing --format markdown --changes-only \
        --output "$ARTIFACTS/compare.md"
    if [ "$rc" -eq 1 ]; then
        regression=1
    elif [ "$rc" -ne 0 ]; then
        fail "comparison with baseline $BASELINE failed (exit $rc)"
    fi
    [ "$rc" -le 1 ] && against=(--against "$BASELINE")
    [ -f "$ARTIFACTS/compare.md" ] && cat "$ARTIFACTS/compare.md"
else
    echo "nightly: no baseline $BASELINE; comparison skipped (save one with: harness baseline save $OUT --name $BASELINE)"
fi

"$HARNESS" report "$OUT" "${against[@]}" --output "$ARTIFACTS/report.html"
[ $? -ge 2 ] && fail "harness report failed"
"$HARNESS" export "$OUT" --format markdown --output "$ARTIFACTS/tables.md" || fail "harness export failed"
cp -r "$OUT" "$ARTIFACTS/run"

if [ "${SKIP_ASV:-0}" != "1" ]; then
    commit="$(git rev-parse HEAD)"
    "$ASV" machine --yes --machine "$ASV_MACHINE" >/dev/null || fail "asv machine failed"
    bench=()
    for s in ${SUITES:-}; do bench+=(--bench "$s"); done
    # asv records the run's own records (nothing is measured twice): HARNESS_ASV_RECORDS
    HARNESS_ASV_PROFILE="$PROFILE" HARNESS_ASV_RECORDS="$(cd "$OUT" && pwd)" \
        "$ASV" run --python=same --set-commit-hash "$commit" --machine "$ASV_MACHINE" --show-stderr \
        --launch-method forkserver "${bench[@]}" || fail "asv run failed"
    "$ASV" publish || fail "asv publish failed"
    "$PYTHON" -m harness.asv_html .asv/html || true  # offline copies of asv's libraries, where fetched
    rm -rf "$ARTIFACTS/asv-html"
    cp -r .asv/html "$ARTIFACTS/asv-html"
fi

if [ "$status" -eq 0 ] && [ "${regression:-0}" -eq 1 ]; then
    echo "nightly: REGRESSION against baseline $BASELINE (see $ARTIFACTS/compare.md)" >&2
    status=1
fi
if [ "$status" -eq 0 ] && [ "${cases_failed:-0}" -eq 1 ]; then
    echo "nightly: some cases failed, ran out of memory, timed out or crashed (see $ARTIFACTS/tables.md)" >&2
    status=1
fi
exit "$status"
