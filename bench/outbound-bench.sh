#!/bin/bash
# Outbound throughput: messages per second from cursusd's queue to Postfix's smtp-sink over
# reused connections, beside the ceiling smtp-source -> smtp-sink measured in the same run.
#
#   usage: bash bench/outbound-bench.sh [MESSAGES] [path/to/cursusd]
#          (default 5000 messages, target/release/cursusd, built if missing)
#          BENCH_DIR=/dev/shm puts the queue on tmpfs (no fsync cost: the outbound path alone)
#          PERF=/tmp/out.data also records a perf profile of cursusd during the queue run
#
# How: cursusd (single-user mode; as `nobody` when run as root) relays *@sink.test through a
# manualroute router to 127.0.0.1:SINK. First the sink is down, so smtp-source's MESSAGES
# (1 KiB, one recipient each) are accepted and deferred (connection refused). Then
# smtp-sink starts and SIGUSR1 (what `cursus sendmail -q` sends) makes cursusd try every
# message now: the clock runs from the signal to the last `status=sent` log line. The
# ceiling is smtp-source -d (connection reuse) with 16 sessions straight into the same
# smtp-sink, measured before and after (the higher one counts: the machine is shared). Also printed, for information: the end-to-end relay rate (smtp-source ->
# cursusd -> smtp-sink with the sink up, first attempt at once), which includes reception
# and the fsync of every accepted message.
# Prints the three rates and outbound/ceiling (the target is >= 0.5).
set -eu

N=${1:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${2:-$ROOT/target/release/cursusd}
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release -p cursusd)
fi
for t in smtp-source smtp-sink python3; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || { echo "SKIP: $t missing (scripts/install-test-deps.sh)"; exit 77; }
done
export PATH=$PATH:/usr/sbin

TMP=$(mktemp -d "${BENCH_DIR:-/tmp}/cursus-obench.XXXXXX")
chmod 755 "$TMP"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK=$(port)
CPORT=$(port)
SINK_USER=()
RUN=()
if [ "$(id -u)" = 0 ]; then
    SINK_USER=(-u nobody)
    RUN=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi

count() { grep -c "$1" "$TMP/cursusd.log" 2>/dev/null || true; }
wait_count() { # pattern n timeout
    local deadline=$((SECONDS + $3))
    while [ "$(count "$1")" -lt "$2" ]; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $2 x '$1' (have $(count "$1"))"; tail -5 "$TMP/cursusd.log"; exit 1; }
        sleep 0.05
    done
}
now() { date +%s.%N; }
# user + system CPU time of a process so far, in clock ticks (/proc/PID/stat fields 14, 15)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_cursusd() {
    local data=$TMP/data-$1
    mkdir -p "$data"
    printf '@localhost nobody\n' > "$TMP/mailboxes"
    cat > "$TMP/cursus-$1.toml" <<EOF
hostname = "cursus.bench"
data_dir = "$data"
[smtp]
listen = ["127.0.0.1:$CPORT"]
messages_per_connection = 1000000
[outbound]
resolver = "127.0.0.1:9"
connect_timeout = 2
idle_timeout = 10
[routing]
local_domains = ["localhost"]
[[router]]
name = "mailboxes"
driver = "virtual"
table = { file = "$TMP/mailboxes" }
transport = "local"
[[router]]
name = "relay"
driver = "manualroute"
domains = ["sink.test"]
hosts = ["127.0.0.1"]
port = $SINK
transport = "smtp"
[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:$data/mail/\${local}/Maildir"
[[transport]]
name = "smtp"
driver = "smtp"
EOF
    [ "$(id -u)" = 0 ] && chown -R nobody "$TMP"
    : > "$TMP/cursusd.log"
    HOME=$TMP "${RUN[@]}" "$BIN" -c "$TMP/cursus-$1.toml" -d "$data" >>"$TMP/cursusd.log" 2>&1 &
    CPID=$!
    PIDS+=("$CPID")
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$CPORT),0.2)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "cursusd did not start"; cat "$TMP/cursusd.log"; exit 1
}
stop_cursusd() {
    kill "$CPID" 2>/dev/null || true
    wait "$CPID" 2>/dev/null || true
}
start_sink() {
    smtp-sink "${SINK_USER[@]}" "127.0.0.1:$SINK" 256 &
    SPID=$!
    PIDS+=("$SPID")
    sleep 0.3
}
stop_sink() {
    kill "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
}

echo "outbound bench: $N messages of 1 KiB, one recipient each; cursusd $BIN"

# 1. The ceiling: smtp-source -> smtp-sink, 16 sessions, connections reused.
ceiling_run() {
    local t0 t1
    t0=$(now)
    smtp-source -d -s 16 -m "$N" -l 1024 -f bench@localhost -t rcpt@sink.test "127.0.0.1:$SINK"
    t1=$(now)
    python3 -c "print(f'{$N/($t1-$t0):.0f}')"
}
start_sink
ceiling1=$(ceiling_run)
echo "ceiling  smtp-source -> smtp-sink:        $ceiling1 msg/s (before)"

# 2. Outbound from the queue: fill it while the sink is down, then one queue run.
stop_sink
start_cursusd queue
smtp-source -d -s 8 -m "$N" -l 1024 -f bench@localhost -t rcpt@sink.test "127.0.0.1:$CPORT"
wait_count "status=deferred" "$N" 300
start_sink
if [ -n "${PERF:-}" ]; then   # PERF=out.data: profile cursusd during the queue run
    perf record -g -o "$PERF" -p "$CPID" 2>/dev/null &
    PERFPID=$!
    sleep 0.5
fi
cpu0=$(cpu_ticks "$CPID")
t0=$(now)
kill -USR1 "$CPID"
wait_count "status=sent" "$N" 600
t1=$(now)
cpu1=$(cpu_ticks "$CPID")
if [ -n "${PERF:-}" ]; then kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null || true; fi
outbound=$(python3 -c "print(f'{$N/($t1-$t0):.0f}')")
reused=$(count "conn=reused")
echo "outbound cursusd queue -> smtp-sink:     $outbound msg/s ($reused of $N deliveries on a reused connection)"
cpu_us=$(python3 -c "print(f'{($cpu1-$cpu0)/$(getconf CLK_TCK)*1e6/$N:.0f}')")
echo "         cursusd CPU (user+system) per message in the queue run: $cpu_us us (less noisy than the rate on a shared machine)"
stop_cursusd
ceiling2=$(ceiling_run)
echo "ceiling  smtp-source -> smtp-sink:        $ceiling2 msg/s (after)"
ceiling=$(python3 -c "print(max($ceiling1, $ceiling2))")

# 3. For information: relay end to end (reception with fsync, first attempt at once).
start_cursusd relay
t0=$(now)
smtp-source -d -s 8 -m "$N" -l 1024 -f bench@localhost -t rcpt@sink.test "127.0.0.1:$CPORT"
wait_count "status=sent" "$N" 600
t1=$(now)
relay=$(python3 -c "print(f'{$N/($t1-$t0):.0f}')")
echo "relay    smtp-source -> cursusd -> sink: $relay msg/s (end to end, includes reception)"
stop_cursusd
stop_sink

python3 -c "print(f'ratio outbound/ceiling: {$outbound/$ceiling:.2f} (the higher ceiling, $ceiling msg/s; target >= 0.5)')"
