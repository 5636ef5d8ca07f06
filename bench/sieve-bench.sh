#!/bin/bash
# cursus-sieve against Pigeonhole's sieve-test: a 50-rule script against a 2 KB message.
#
#   usage: bash bench/sieve-bench.sh [EVALUATIONS] [PROCESSES]
#       EVALUATIONS: in-process evaluations of the compiled script (default 200000)
#       PROCESSES:   process runs of each command-line tool (default 300)
#       CURSUS_BIN=path/to/cursus to use a given binary; otherwise it is built with
#       `cargo build --release -p cursus-cli` (honours CARGO_TARGET_DIR).
#
# Measures, one after the other in the same run:
#   1. in process, pinned to one core: compile time of bench/data/rules50.sieve (median of
#      2000 compiles) and evaluations per second of the compiled script against
#      ../shared/tools/peer-bench/msg-2k.eml (`cursus sieve bench`, a hidden subcommand);
#   2. one process per run, as a user runs them: `cursus sieve test`, `sieve-test` with its
#      cached .svbin (as Dovecot runs a script it compiled before), `sieve-test -C`
#      (compiling every run), and /bin/true for the cost of a process.
# The issue's target is at least 100,000 evaluations/s (1). sieve-test only exists as one
# process per run, so its figure is processes per second; the report puts it beside the
# like-for-like `cursus sieve test` figure and, separately and labelled as such, beside the
# in-process figure. Both tools first print the same actions (checked).
# As root, the process runs use setpriv(1) to run as nobody (sieve-test refuses root).
# Results go to bench/results/ (gitignored) and are printed. Not a timed test: the numbers
# depend on the machine; run it on an otherwise idle one.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-200000}
P=${2:-300}
SCRIPT=$ROOT/bench/data/rules50.sieve
MSG=$ROOT/../shared/tools/peer-bench/msg-2k.eml
RESULTS=$ROOT/bench/results
FROM=bench@example.com
TO=mbench@localhost

case $N$P in '' | *[!0-9]*) echo "error: EVALUATIONS and PROCESSES must be numbers"; exit 64 ;; esac
[ -f "$MSG" ] || { echo "error: $MSG not found"; exit 1; }

if [ -n "${CURSUS_BIN:-}" ]; then
    BIN=$CURSUS_BIN
else
    (cd "$ROOT" && cargo build --release --locked -q -p cursus-cli)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cursus
fi
[ -x "$BIN" ] || { echo "error: $BIN not found"; exit 1; }

SIEVE_TEST=$(command -v sieve-test || true)
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
AS_USER=()
if [ "$(id -u)" -eq 0 ]; then
    AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi

# Everything the process runs read lives in a directory the user can read and write (the
# .svbin of sieve-test is saved next to the script).
W=$(mktemp -d /tmp/cursus-sieve-bench.XXXXXX)
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
chmod 0777 "$W"
cp "$SCRIPT" "$W/rules50.sieve"
cp "$MSG" "$W/msg-2k.eml"
install -m 0755 "$BIN" "$W/cursus"
chmod 0644 "$W/rules50.sieve" "$W/msg-2k.eml"
printf 'protocols =\nmail_location = maildir:%s/mail\n' "$W" > "$W/sieve.conf"
chmod 0644 "$W/sieve.conf"

now() { date +%s.%N; }
# per_second COUNT START END
per_second() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
# ms_each COUNT START END
ms_each() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", (b - a) * 1000 / n }'; }
# runs COUNT COMMAND...: time COUNT runs, print "per_second ms_each"
runs() {
    local count=$1 i start end
    shift
    start=$(now)
    for ((i = 0; i < count; i++)); do "$@" >/dev/null 2>&1; done
    end=$(now)
    echo "$(per_second "$count" "$start" "$end") $(ms_each "$count" "$start" "$end")"
}

cd "$W"
CURSUS_TEST=("${AS_USER[@]}" "$W/cursus" sieve test --from "$FROM" --to "$TO" rules50.sieve msg-2k.eml)
PH_TEST=("${AS_USER[@]}" "$SIEVE_TEST" -c "$W/sieve.conf" -f "$FROM" -a "$TO" -r "$TO" rules50.sieve msg-2k.eml)

# --- the same actions from both --------------------------------------------------------------
ours_actions=$("${CURSUS_TEST[@]}" | grep '^ \*' || true)
same="sieve-test not installed"
if [ -n "$SIEVE_TEST" ]; then
    theirs_actions=$("${PH_TEST[@]}" -C 2>/dev/null | grep '^ \*' || true)
    if [ "$ours_actions" = "$theirs_actions" ]; then same="yes"; else same="NO"; fi
fi

# --- 1. in process ---------------------------------------------------------------------------
inproc=$("${PIN[@]}" "$W/cursus" sieve bench --iterations "$N" --from "$FROM" --to "$TO" rules50.sieve msg-2k.eml)
val() { echo "$inproc" | sed -n "s/^$1=//p"; }
EPS=$(val evaluations_per_second)
EPS_CPU=$(val evaluations_per_cpu_second)
EVAL_US=$(val evaluate_us)
COMPILE_US=$(val compile_median_us)

# --- 2. one process per run --------------------------------------------------------------------
read -r TRUE_PS TRUE_MS <<<"$(runs "$P" "${PIN[@]}" /bin/true)"
read -r CUR_PS CUR_MS <<<"$(runs "$P" "${PIN[@]}" "${CURSUS_TEST[@]}")"
PH_PS=- PH_MS=- PHC_PS=- PHC_MS=-
if [ -n "$SIEVE_TEST" ]; then
    "${PH_TEST[@]}" -C >/dev/null 2>&1 || true   # writes rules50.svbin
    read -r PH_PS PH_MS <<<"$(runs "$P" "${PIN[@]}" "${PH_TEST[@]}")"
    read -r PHC_PS PHC_MS <<<"$(runs "$P" "${PIN[@]}" "${PH_TEST[@]}" -C)"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "-" || b == 0) print "-"; else printf "%.1f", a / b }'; }
busy=$(pgrep -c -x 'cargo|rustc' 2>/dev/null || true)
target="below the target"
awk -v e="$EPS" 'BEGIN { exit !(e >= 100000) }' && target="target met"

mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$RESULTS/sieve-bench-$stamp.txt
{
    echo "cursus-sieve benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n), $(nproc) cores"
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); cargo/rustc processes running: ${busy:-0}"
    echo "script:  bench/data/rules50.sieve ($(wc -c <"$SCRIPT") bytes, 50 rules; the message is filed by rule 48)"
    echo "message: ../shared/tools/peer-bench/msg-2k.eml ($(wc -c <"$MSG") bytes)"
    echo "cursus:  $BIN"
    echo "sieve-test: ${SIEVE_TEST:-not installed} $(dpkg-query -W -f '${Version}' dovecot-sieve 2>/dev/null || true)"
    echo "same actions from both tools: $same"
    echo "$ours_actions" | sed 's/^/    /'
    echo
    echo "In process, one core (cursus sieve bench; sieve-test has no such mode):"
    printf '  compile rules50.sieve            %10s us (median of %s)\n' "$COMPILE_US" "$(val compiles)"
    printf '  evaluate the compiled script     %10s us each\n' "$EVAL_US"
    printf '  evaluations per second           %10s  (%s evaluations, wall clock; issue target >= 100000: %s)\n' "$EPS" "$N" "$target"
    [ -n "$EPS_CPU" ] && printf '  evaluations per CPU second       %10s  (time on the CPU only: what an idle core would give)\n' "$EPS_CPU"
    echo
    echo "One process per run ($P runs each, one core):"
    printf '  %-34s %8s runs/s %8s ms each\n' "/bin/true (cost of a process)" "$TRUE_PS" "$TRUE_MS"
    printf '  %-34s %8s runs/s %8s ms each\n' "cursus sieve test (compiles)" "$CUR_PS" "$CUR_MS"
    printf '  %-34s %8s runs/s %8s ms each\n' "sieve-test (cached .svbin)" "$PH_PS" "$PH_MS"
    printf '  %-34s %8s runs/s %8s ms each\n' "sieve-test -C (compiles)" "$PHC_PS" "$PHC_MS"
    echo
    echo "Ratios:"
    echo "  like for like, one process per run: cursus sieve test is $(ratio "$CUR_PS" "$PH_PS") x sieve-test (cached)"
    echo "    and $(ratio "$CUR_PS" "$PHC_PS") x sieve-test -C; both are mostly process start-up (see /bin/true)"
    echo "  NOT like for like: in-process evaluations/s over sieve-test runs/s = $(ratio "$EPS" "$PH_PS")"
    echo "    (what an MDA that keeps the compiled script gains over a process per message)"
} | tee "$out"
cp "$out" "$RESULTS/sieve-latest.txt"
echo "saved: $out"
