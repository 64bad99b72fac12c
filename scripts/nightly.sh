#!/usr/bin/env bash
# The nightly job (the GitHub workflow and `make nightly` both run this script), run from the
# checkout's root (a git checkout: the gate measures commits):
#   0. make a fresh folder ARTIFACTS/<UTC stamp>/ for this night (a suffix -2, -3 ... where it
#      exists) and point ARTIFACTS/latest (a symlink) and ARTIFACTS/latest.txt (its name) at it;
#      every file of the night goes there, none of an earlier night is in it;
#   1. the gate (GATE=ab, the default unless DEVICE is cuda...): `harness ab GREEN HEAD` into
#      NIGHT/ab/ (a/, b/, ab.md, ab.json), both commits measured now on this machine, paired; ab.md is
#      printed. GREEN is the commit of the last night that ended green (LAST_GREEN, a file),
#      else HEAD~1, else (a single commit) HEAD itself. Where GREEN is HEAD (a night re-run on the
#      same commit) the ab still runs, A/A: the night is then red only if the noise alone trips it;
#   2. weekly, where ANCHOR is set and today (UTC) is WEEKDAY: `harness ab ANCHOR HEAD` into
#      NIGHT/anchor/, so slow creep that no single night shows is caught; its regression makes the
#      night red too (when a slowdown since the anchor is accepted, move ANCHOR to a newer commit);
#   3. the run of this commit is the gate's side B (NIGHT/ab/b); with GATE=baseline, or where the ab
#      could not run, the profile is run into NIGHT/run instead (isolated cases, ROUNDS rounds);
#   4. the stored baseline (for history): compare it with the run (NIGHT/compare.md, .json). One
#      measured on another device (CPU or GPU model) is not compared: one line says so and how to
#      save one here, and the night goes on. With GATE=ab its regressions are reported, not gated;
#      with GATE=baseline (the default on cuda: the GPU runner keeps its own baseline) they gate;
#   5. write the HTML report (of the ab folder, with its paired verdicts; else against the baseline)
#      and the export tables,
#   6. record the run's records as the commit's results in asv's history (asv run --python=same
#      with HARNESS_ASV_RECORDS: nothing is measured a second time), publish asv's HTML and copy it
#      to NIGHT/asv-html,
#   7. exit 1 when the gate (or the anchor) found a regression (slower, worse, failed, missing
#      cases), or with GATE=baseline when a case failed, ran out of memory, timed out or crashed;
#      2 when a step failed; else 0, and then (only then) write LAST_GREEN
#      ("<commit> <UTC date-time> <night folder>"), side A of the next night's gate.
# Every artifact is written before the exit code is decided, so a red night still has them;
# NIGHT/nightly.txt sums the night up (commit, side A and why, anchor, exit code).
#
# Settings (environment): PROFILE (nightly), DEVICE (auto), GATE (ab|baseline; default ab, baseline
# where DEVICE starts with cuda), GREEN (a commit: side A of the gate instead of LAST_GREEN's),
# LAST_GREEN (the file of the last green commit; default ARTIFACTS/last-green.txt: keep it where
# the checkout's cleaning does not reach), ANCHOR (a commit: the weekly ab against it; unset:
# none), WEEKDAY (the anchor's day, UTC: a name such as Sunday or sun, or 1-7 with 7 = Sunday;
# default Sunday), ANCHOR_EVERY_DAY=1 (the anchor every night), BASELINE (a name, looked up in $HARNESS_BASELINES_DIR, ./baselines/, then the
# shipped baselines/ as `harness baseline list` shows, or a path; default <cpu|gpu>-<PROFILE>,
# skipped when absent), ARTIFACTS (results/nightly-artifacts: one folder per night under it),
# ASV_MACHINE (this host's name), SUITES (names, space-separated, or suite files; default all),
# THREADS (torch CPU threads; default 1 on DEVICE=cpu, as baselines/cpu-quick.json was measured),
# CPUS (a CPU list for `harness ab --cpus`), AB_ARGS (more arguments for `harness ab`, space-
# separated), ROUNDS (passes over all cases of NIGHT/run, default 3: compare reads the spread
# between them as the noise between runs), CASE_TIMEOUT (seconds per case, default 1800; every
# case runs in an isolated worker), SKIP_ASV=1 to leave out asv. asv reads $HARNESS_ASV_PARAM/_K
# too. HARNESS, ASV and PYTHON name the commands.
set -uo pipefail

PROFILE="${PROFILE:-nightly}"
DEVICE="${DEVICE:-auto}"
case "$DEVICE" in cuda*) default_gate=baseline ;; *) default_gate=ab ;; esac
GATE="${GATE:-$default_gate}"
WEEKDAY="${WEEKDAY:-Sunday}"
ARTIFACTS="${ARTIFACTS:-results/nightly-artifacts}"
LAST_GREEN="${LAST_GREEN:-$ARTIFACTS/last-green.txt}"
ASV_MACHINE="${ASV_MACHINE:-$(hostname)}"
HARNESS="${HARNESS:-harness}"
ASV="${ASV:-asv}"
PYTHON="${PYTHON:-python}"
CASE_TIMEOUT="${CASE_TIMEOUT:-1800}"
ROUNDS="${ROUNDS:-3}"
if [ "$DEVICE" = "cpu" ] && [ -z "${THREADS:-}" ]; then THREADS=1; fi

status=0
fail() { echo "nightly: $*" >&2; [ "$status" -eq 0 ] && status=2; }

case "$GATE" in
    ab | baseline) ;;
    *) echo "nightly: GATE must be ab or baseline, not '$GATE'" >&2; exit 2 ;;
esac

# 0. This night's folder: fresh, never an earlier night's (mkdir fails where the name is taken).
mkdir -p "$ARTIFACTS" || { echo "nightly: cannot create $ARTIFACTS" >&2; exit 2; }
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
night_name="$stamp"
n=1
until mkdir "$ARTIFACTS/$night_name" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt 100 ] || [ ! -w "$ARTIFACTS" ]; then
        echo "nightly: cannot create a folder for this night under $ARTIFACTS" >&2
        exit 2
    fi
    night_name="$stamp-$n"
done
NIGHT="$ARTIFACTS/$night_name"
ln -sfn "$night_name" "$ARTIFACTS/latest" 2>/dev/null || true  # where links are allowed
echo "$night_name" > "$ARTIFACTS/latest.txt"
echo "nightly: artifacts of this night in $NIGHT"

commit_of() { git rev-parse --verify -q "$1^{commit}" 2>/dev/null; }
head_sha="$(commit_of HEAD)" || head_sha=""
side_a="" a_from="" anchor_sha="" anchor_ran=0

summary() {  # NIGHT/nightly.txt, written last
    {
        echo "commit: ${head_sha:-unknown}"
        echo "gate: $GATE"
        [ "$GATE" = ab ] && echo "side A: ${side_a:-none} (${a_from:-not chosen})"
        [ "$anchor_ran" -eq 1 ] && echo "anchor: $anchor_sha"
        echo "profile: $PROFILE, device: $DEVICE"
        echo "exit: $status"
    } > "$NIGHT/nightly.txt"
}

run_ab() {  # run_ab COMMIT_A OUT_DIR: harness ab COMMIT_A HEAD into OUT_DIR; prints ab.md
    # shellcheck disable=SC2086  # SUITES and AB_ARGS are space-separated lists
    "$HARNESS" ab "$1" "$head_sha" ${SUITES:-} --profile "$PROFILE" --device "$DEVICE" --out "$2" \
        --quiet --no-progress --timeout "$CASE_TIMEOUT" ${THREADS:+--threads "$THREADS"} \
        ${CPUS:+--cpus "$CPUS"} ${AB_ARGS:-}
    local rc=$?
    [ -f "$2/ab.md" ] && cat "$2/ab.md"
    return "$rc"
}

gate_ab() {  # gate_ab COMMIT_A OUT_DIR FLAG WHAT: run_ab; exit 1 sets FLAG=1, any other failure is WHAT
    run_ab "$1" "$2"
    local rc=$?
    if [ "$rc" -eq 1 ]; then
        printf -v "$3" 1
    elif [ "$rc" -ne 0 ]; then
        fail "$4 (exit $rc)"
    fi
}

# 1. The gate: the last green commit against HEAD, both measured now, here.
if [ "$GATE" = ab ]; then
    if [ -z "$head_sha" ]; then
        fail "not in a git checkout (or no commit yet): the gate (harness ab) measures commits"
    else
        if [ -n "${GREEN:-}" ]; then
            side_a="$(commit_of "$GREEN")" || fail "GREEN=$GREEN is not a commit of this checkout"
            a_from="GREEN=$GREEN"
        elif [ -s "$LAST_GREEN" ]; then
            read -r green_sha green_date _ < "$LAST_GREEN"
            if side_a="$(commit_of "${green_sha:-none}")"; then
                a_from="the last green night, $green_date"
            else
                echo "nightly: the last green commit ${green_sha:-?} ($LAST_GREEN) is not in" \
                    "this checkout; using HEAD~1"
            fi
        fi
        if [ -z "$side_a" ] && [ "$status" -eq 0 ]; then
            if side_a="$(commit_of HEAD~1)"; then
                a_from="HEAD~1, no green night recorded"
            else
                side_a="$head_sha"
                a_from="HEAD itself: a single commit, so A/A"
            fi
        fi
    fi
    if [ -n "$side_a" ]; then
        [ "$side_a" = "$head_sha" ] && echo "nightly: side A is HEAD itself: an A/A run (it measures the noise)"
        echo "nightly: gate: harness ab ${side_a:0:12} (${a_from}) against HEAD ${head_sha:0:12}," \
            "profile $PROFILE on device $DEVICE"
        gate_ab "$side_a" "$NIGHT/ab" regression "harness ab failed"
    fi
fi

# 2. Weekly: the fixed anchor against HEAD, so slow creep shows.
if [ -n "${ANCHOR:-}" ]; then
    day="$(printf '%s' "$WEEKDAY" | tr '[:upper:]' '[:lower:]')"
    case "$day" in
        mon | monday | 1) day=1 ;; tue | tuesday | 2) day=2 ;; wed | wednesday | 3) day=3 ;;
        thu | thursday | 4) day=4 ;; fri | friday | 5) day=5 ;; sat | saturday | 6) day=6 ;;
        sun | sunday | 0 | 7) day=7 ;;
        *) day=""; fail "WEEKDAY=$WEEKDAY is not a day (a name such as Sunday, or 1-7 with 7 = Sunday)" ;;
    esac
    if [ "${ANCHOR_EVERY_DAY:-0}" = "1" ] || { [ -n "$day" ] && [ "$day" = "$(date -u +%u)" ]; }; then
        if [ -z "$head_sha" ]; then
            fail "not in a git checkout: the anchor's ab measures commits"
        elif ! anchor_sha="$(commit_of "$ANCHOR")"; then
            fail "ANCHOR=$ANCHOR is not a commit of this checkout"
        else
            anchor_ran=1
            echo "nightly: weekly: harness ab anchor ${anchor_sha:0:12} ($ANCHOR) against HEAD ${head_sha:0:12}"
            gate_ab "$anchor_sha" "$NIGHT/anchor" anchor_regression "harness ab against the anchor failed"
        fi
    fi
fi

# 3. The run of this commit: the gate's side B, else a run of its own.
if [ "$GATE" = ab ] && [ -f "$NIGHT/ab/b/run.json" ]; then
    RUN="$NIGHT/ab/b"
else
    RUN="$NIGHT/run"
    echo "nightly: running profile $PROFILE on device $DEVICE into $RUN"
    # shellcheck disable=SC2086  # SUITES is a space-separated list of suite names
    "$HARNESS" run ${SUITES:-} --profile "$PROFILE" --device "$DEVICE" --out "$RUN" --quiet --no-progress \
        --isolate --timeout "$CASE_TIMEOUT" --rounds "$ROUNDS" ${THREADS:+--threads "$THREADS"}
    rc=$?
    if [ "$rc" -ge 2 ] || [ ! -f "$RUN/run.json" ]; then
        fail "harness run failed (exit $rc)"
        summary
        exit "$status"
    fi
    # exit 1: a case failed, ran out of memory, timed out or crashed (recorded; the night goes on)
    [ "$rc" -eq 1 ] && cases_failed=1
fi

# 4. The stored baseline, for history (and the gate with GATE=baseline).
device_kind=cpu
grep -q '"device": "cuda' "$RUN/run.json" && device_kind=gpu
explicit_baseline=1
if [ -z "${BASELINE:-}" ]; then
    BASELINE="$device_kind-$PROFILE"
    explicit_baseline=0
fi
baseline_compared=0
"$HARNESS" baseline list > "$NIGHT/baselines.txt" 2>/dev/null
if [ "$explicit_baseline" -eq 1 ] || grep -q "^$BASELINE:" "$NIGHT/baselines.txt"; then
    errors="$NIGHT/.compare.stderr"
    "$HARNESS" compare "$BASELINE" "$RUN" --fail-on-missing --format json --output "$NIGHT/compare.json" 2> "$errors"
    rc=$?
    refusal="$(grep -m1 'refusing to compare results from different devices: A was measured on .*, B on ' "$errors")"
    if [ "$rc" -eq 2 ] && [ -n "$refusal" ]; then
        theirs="${refusal#*A was measured on }"
        theirs="${theirs%%, B on *}"
        ours="${refusal#*, B on }"
        ours="${ours%%; pass --force*}"
        echo "nightly: baseline $BASELINE was measured on $theirs, this machine is $ours; not compared" \
            "(save one here with: harness baseline save $RUN --name $BASELINE --dir DIR, then run with" \
            "HARNESS_BASELINES_DIR=DIR; or set BASELINE=... to another)"
    else
        cat "$errors" >&2
        "$HARNESS" compare "$BASELINE" "$RUN" --fail-on-missing --format markdown --changes-only \
            --output "$NIGHT/compare.md"
        if [ "$rc" -eq 1 ]; then
            if [ "$GATE" = baseline ]; then
                regression=1
            else
                echo "nightly: note: regressions against the stored baseline $BASELINE (history, not the gate;" \
                    "see $NIGHT/compare.md)"
            fi
        elif [ "$rc" -ne 0 ]; then
            fail "comparison with baseline $BASELINE failed (exit $rc)"
        fi
        [ "$rc" -le 1 ] && baseline_compared=1
        [ -f "$NIGHT/compare.md" ] && cat "$NIGHT/compare.md"
    fi
    rm -f "$errors"
else
    echo "nightly: no baseline $BASELINE; comparison skipped (save one with: harness baseline save $RUN" \
        "--name $BASELINE)"
fi

# 5. The report (of the ab folder: side B with the paired verdicts; else against the baseline) and
#    the export tables.
against=()
report_of="$RUN"
if [ "$RUN" = "$NIGHT/ab/b" ] && [ -f "$NIGHT/ab/ab.json" ]; then
    report_of="$NIGHT/ab"
elif [ "$baseline_compared" -eq 1 ]; then
    against=(--against "$BASELINE")
fi
"$HARNESS" report "$report_of" "${against[@]}" --output "$NIGHT/report.html"
[ $? -ge 2 ] && fail "harness report failed"
"$HARNESS" export "$RUN" --format markdown --output "$NIGHT/tables.md" || fail "harness export failed"

# 6. asv's history: this commit's results are the run's records.
if [ "${SKIP_ASV:-0}" != "1" ]; then
    if [ -z "$head_sha" ]; then
        fail "not in a git checkout: asv records results per commit"
    else
        "$ASV" machine --yes --machine "$ASV_MACHINE" >/dev/null || fail "asv machine failed"
        bench=()
        for s in ${SUITES:-}; do bench+=(--bench "$s"); done
        # asv records the run's own records (nothing is measured twice): HARNESS_ASV_RECORDS
        HARNESS_ASV_PROFILE="$PROFILE" HARNESS_ASV_RECORDS="$(cd "$RUN" && pwd)" \
            "$ASV" run --python=same --set-commit-hash "$head_sha" --machine "$ASV_MACHINE" --show-stderr \
            --launch-method forkserver "${bench[@]}" || fail "asv run failed"
        "$ASV" publish || fail "asv publish failed"
        "$PYTHON" -m harness.asv_html .asv/html || true  # offline copies of asv's libraries, where fetched
        cp -r .asv/html "$NIGHT/asv-html" || fail "copying asv's HTML failed"
    fi
fi

# 7. The verdict.
if [ "$status" -eq 0 ] && [ "${regression:-0}" -eq 1 ]; then
    if [ "$GATE" = ab ]; then
        echo "nightly: REGRESSION: HEAD against ${side_a:0:12} ($a_from) (see $NIGHT/ab/ab.md)" >&2
    else
        echo "nightly: REGRESSION against baseline $BASELINE (see $NIGHT/compare.md)" >&2
    fi
    status=1
fi
if [ "$status" -eq 0 ] && [ "${anchor_regression:-0}" -eq 1 ]; then
    echo "nightly: REGRESSION against the anchor ${anchor_sha:0:12} ($ANCHOR) (see $NIGHT/anchor/ab.md;" \
        "where the change is accepted, set ANCHOR to a newer commit)" >&2
    status=1
fi
if [ "$status" -eq 0 ] && [ "${cases_failed:-0}" -eq 1 ]; then
    echo "nightly: some cases failed, ran out of memory, timed out or crashed (see $NIGHT/tables.md)" >&2
    status=1
fi
if [ "$status" -eq 0 ] && [ -n "$head_sha" ]; then
    if ! { echo "$head_sha $(date -u +%Y-%m-%dT%H:%M:%SZ) $night_name" > "$LAST_GREEN.tmp" \
        && mv -f "$LAST_GREEN.tmp" "$LAST_GREEN"; }; then
        fail "cannot write $LAST_GREEN"
    fi
fi
summary
exit "$status"
