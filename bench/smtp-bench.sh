#!/bin/bash
# End-to-end SMTP benchmark (issue 5 §6): smtp-source into local Maildir delivery, side by
# side in one run, for
#   postfix     Postfix set up by ../shared/tools/peer-bench/postfix-setup.sh (127.0.0.1:2526,
#               local(8) into ~mbench/Maildir)
#   cursus-su   cursusd in single-user mode (127.0.0.1:2527), started as the unprivileged
#               user cbench-su, data directory in a temporary directory, delivering in-process
#   cursus-sys  cursusd in system mode (127.0.0.1:2528), started as root with a configuration:
#               it spawns cursus-lda, becomes the `cursus` user, and every delivery goes through
#               cursus-lda into ~cbench/Maildir as cbench under a policy file
# each measured by ../shared/tools/peer-bench/smtp-bench.sh (acceptance = smtp-source done,
# end-to-end = every message in new/). fsync is on everywhere (the daemons' defaults).
# Then 10,000 idle SMTP connections held open to cursusd (bench/idle-connections.py).
#
# usage: sudo bash bench/smtp-bench.sh [MSGS=2000] [ROUNDS=1]
# env:   SESSIONS=10 LEN=2000 IDLE=10000 MTAS="postfix cursus-su cursus-sys" BIN=target/release
#        BASE_BIN=DIR (also measure base-su and base-sys: cursusd and cursus-lda from DIR, e.g. a
#        build of an older commit, side by side in the same run)
#        STRACE=1 (one extra unmeasured run per cursusd mode under strace -c -f: syscalls and
#        fsyncs per message)
# Not part of the test suite. Needs root, Postfix (scripts/install-test-deps.sh) and
#   cargo build --release -p cursusd -p cursus-cli -p cursus-lda
set -u
M=${1:-2000}
ROUNDS=${2:-1}
S=${SESSIONS:-10}
L=${LEN:-2000}
IDLE=${IDLE:-10000}
MTAS=${MTAS:-postfix cursus-su cursus-sys}

[ "$(id -u)" -eq 0 ] || { echo "smtp-bench: run as root"; exit 1; }
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
peer="$top/../shared/tools/peer-bench"
BIN=${BIN:-$top/target/release}
BIN=$(cd "$BIN" && pwd)
for f in "$BIN/cursusd" "$BIN/cursus-lda" /usr/sbin/smtp-source /usr/sbin/postfix "$peer/smtp-bench.sh"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "smtp-bench: missing $f"; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/smtp-bench.XXXXXX)
chmod 755 "$work"
results="$top/bench/results"
mkdir -p "$results"
out="$results/smtp-bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
cgroot=/sys/fs/cgroup/cpuacct
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  postfix stop >/dev/null 2>&1
  for m in postfix cursus-su cursus-sys base-su base-sys idle; do rmdir "$cgroot/smtpbench-$m" 2>/dev/null; done
}
trap cleanup EXIT

# --- users -----------------------------------------------------------------------------
id cursus >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent -s /usr/sbin/nologin cursus
for u in cbench cbench-su; do
  id "$u" >/dev/null 2>&1 || useradd -m -s /usr/sbin/nologin "$u"
done

# --- CPU and memory accounting ---------------------------------------------------------
# Each MTA runs in its own cpuacct cgroup (v1 here; children inherit it, exited processes
# stay counted), so CPU time covers every process of that MTA. Peak memory: the sum of the
# PSS (proportional set size: shared pages divided among their sharers, so shared libraries
# are not counted once per process) of the cgroup's processes, sampled every 0.2 s while
# the run lasts.
cg_new() { mkdir -p "$cgroot/smtpbench-$1"; }
cg_cpu() { cat "$cgroot/smtpbench-$1/cpuacct.usage"; }
rss_sum() {
  local pids
  pids=$(cat "$cgroot/smtpbench-$1/cgroup.procs" 2>/dev/null | sed 's|^|/proc/|; s|$|/smaps_rollup|')
  [ -n "$pids" ] || { echo 0; return; }
  # shellcheck disable=SC2086
  cat $pids 2>/dev/null | awk '/^Pss:/ { s += $2 } END { print s + 0 }'
}
sampler() {  # sampler MTA FILE: writes the peak to FILE until killed
  local peak=0 now
  while :; do
    now=$(rss_sum "$1")
    now=${now:-0}
    [ "$now" -gt "$peak" ] && { peak=$now; echo "$peak" > "$2"; }
    sleep 0.2
  done
}

# --- Postfix ---------------------------------------------------------------------------
setup_postfix() {
  postfix stop >/dev/null 2>&1
  sh "$peer/postfix-setup.sh" >/dev/null
  cg_new postfix
  (echo $BASHPID > "$cgroot/smtpbench-postfix/cgroup.procs"; exec postfix start) >/dev/null 2>&1
  sleep 1
}

# --- cursusd ---------------------------------------------------------------------------
# Each cursusd under test: mode, binaries, port and directory. base-* use the binaries in
# $BASE_BIN (an older build, e.g. the commit before an optimisation) in the same run.
declare -A MODE PORT DIRS BINS DPID
MODE[cursus-su]=su;    PORT[cursus-su]=2527;  DIRS[cursus-su]=$work/su
MODE[cursus-sys]=sys;  PORT[cursus-sys]=2528; DIRS[cursus-sys]=$work/sys
MODE[base-su]=su;      PORT[base-su]=2529;    DIRS[base-su]=$work/base-su
MODE[base-sys]=sys;    PORT[base-sys]=2530;   DIRS[base-sys]=$work/base-sys
MODE[idle]=su;         PORT[idle]=2531;       DIRS[idle]=$work/idle
for m in cursus-su cursus-sys idle; do BINS[$m]=$BIN; done
if [ -n "${BASE_BIN:-}" ]; then
  BASE_BIN=$(cd "$BASE_BIN" && pwd)
  for m in base-su base-sys; do BINS[$m]=$BASE_BIN; done
fi
# single-user mode: started as the unprivileged user cbench-su, data in DIR/data, mail for
# rcpt@localhost in DIR/data/mail/rcpt/Maildir, delivered in-process.
# system mode: started as root with DIR/cursus.toml; spawns cursus-lda (policy
# DIR/lda-policy.toml) and becomes `cursus`; mail for cbench@localhost goes through
# cursus-lda into ~cbench/Maildir.
start_cursus() {  # start_cursus NAME
  local name=$1 dir=${DIRS[$1]} port=${PORT[$1]} bin=${BINS[$1]}
  mkdir -p "$dir/data"
  cg_new "$name"
  if [ "${MODE[$name]}" = su ]; then
    printf '[smtp]\nlisten = ["127.0.0.1:%s"]\nmax_connections = 20000\nmax_connections_per_client = 20000\n' \
      "$port" > "$dir/cursus.toml"
    chown -R cbench-su: "$dir"
    chmod 700 "$dir/data"
    (
      echo $BASHPID > "$cgroot/smtpbench-$name/cgroup.procs"
      cd "$dir" || exit 1
      exec setpriv --reuid cbench-su --regid cbench-su --init-groups --reset-env \
        "$bin/cursusd" -c "$dir/cursus.toml" -d "$dir/data"
    ) 2>> "$dir/cursusd.log" &
  else
    chmod 755 "$dir"
    printf '[[allow]]\nname = "home-maildir"\nkind = "maildir"\npath = "~/Maildir"\nsubtree = true\n' \
      > "$dir/lda-policy.toml"
    chmod 644 "$dir/lda-policy.toml"
    printf 'user = "cursus"\ndata_dir = "%s"\n\n[smtp]\nlisten = ["127.0.0.1:%s"]\n\n[lda]\npolicy = "%s"\n' \
      "$dir/data" "$port" "$dir/lda-policy.toml" > "$dir/cursus.toml"
    (
      echo $BASHPID > "$cgroot/smtpbench-$name/cgroup.procs"
      exec "$bin/cursusd" -c "$dir/cursus.toml"
    ) 2>> "$dir/cursusd.log" &
  fi
  DPID[$name]=$!
  pids+=("$!")
  wait_port "$port"
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "smtp-bench: nothing listens on port $1"; exit 1
}

# Old Maildirs are moved aside and removed only at the end: on ext4 every file created scans
# past the inodes freed in the last minute (recently_deleted(), when there is no journal),
# so deleting 2000 files between runs would slow whichever MTA runs next.
fresh_maildir() {  # fresh_maildir DIR OWNER
  if [ -e "$1" ]; then mkdir -p "$work/old"; mv "$1" "$(mktemp -u "$work/old/md.XXXXXX")"; fi
  mkdir -p "$1"/new "$1"/cur "$1"/tmp
  chown -R "$2": "$1"
  chmod -R 700 "$1"
}

# --- one measured run ------------------------------------------------------------------
declare -A ACC E2E CPU RSS SYN
PERF=$(command -v perf || true)
target() {  # target MTA: sets port, rcpt, md (the Maildir counted) and owner
  case ${MODE[$1]:-postfix} in
    postfix) port=2526; rcpt=mbench@localhost; owner=mbench; md=/home/mbench/Maildir ;;
    su)  port=${PORT[$1]}; rcpt=rcpt@localhost; owner=cbench-su; md=${DIRS[$1]}/data/mail/rcpt/Maildir ;;
    sys) port=${PORT[$1]}; rcpt=cbench@localhost; owner=cbench; md=$(getent passwd cbench | cut -d: -f6)/Maildir ;;
  esac
}

run_one() {  # run_one MTA ROUND
  local mta=$1 port rcpt md owner
  target "$mta"
  fresh_maildir "$md" "$owner"
  local peakfile=$work/peak-$mta
  echo 0 > "$peakfile"
  sampler "$mta" "$peakfile" & local sp=$!
  local c0 c1 line
  c0=$(cg_cpu "$mta")
  # fsync + fdatasync calls, counted system-wide by perf's syscall tracepoints (cheap, and
  # unlike strace it does not serialise the daemon's threads); other processes' syncs during
  # the run are included, so read it as an upper bound.
  local sfile=$work/syncs-$mta
  if [ -n "$PERF" ]; then
    line=$($PERF stat -a -x, -o "$sfile" -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -- \
      bash "$peer/smtp-bench.sh" 127.0.0.1:$port "$rcpt" "$md" "$S" "$M" "$L" | tail -1)
  else
    line=$(bash "$peer/smtp-bench.sh" 127.0.0.1:$port "$rcpt" "$md" "$S" "$M" "$L" | tail -1)
  fi
  local syncs=-
  [ -s "$sfile" ] && syncs=$(awk -F, -v m="$M" '$3 ~ /sys_enter_f/ { s += $1 } END { printf "%.2f", s / m }' "$sfile")
  c1=$(cg_cpu "$mta")
  kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null
  local files
  files=$(ls -f "$md/new" | grep -vc '^\.\.\?$')
  local acc e2e
  acc=$(sed -n 's/.*accept=[0-9.]*s (\([0-9]*\) msg\/s).*/\1/p' <<< "$line")
  e2e=$(sed -n 's/.*end-to-end=[0-9.]*s (\([0-9]*\) msg\/s).*/\1/p' <<< "$line")
  local cpu_ms rss
  cpu_ms=$(awk -v a="$c0" -v b="$c1" -v m="$M" 'BEGIN { printf "%.3f", (b - a) / 1e6 / m }')
  rss=$(( $(cat "$peakfile") / 1024 ))
  printf '%-10s round %d: %s | cpu/msg %s ms | syncs/msg %s | peak pss %s MiB | files %s\n' \
    "$mta" "$2" "$line" "$cpu_ms" "$syncs" "$rss" "$files" | tee -a "$out"
  ACC[$mta]+="$acc "; E2E[$mta]+="$e2e "; CPU[$mta]+="$cpu_ms "; RSS[$mta]+="$rss "; SYN[$mta]+="$syncs "
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }'; }

strace_one() {  # strace_one MTA PID: one unmeasured run under strace -c -f
  local mta=$1 pid=$2 port rcpt md owner
  target "$mta"
  fresh_maildir "$md" "$owner"
  local sfile=$work/strace-$mta
  local all
  all=$(pgrep -g "$(ps -o pgid= "$pid" | tr -d ' ')" | sed 's/^/-p /' | tr '\n' ' ')
  # shellcheck disable=SC2086
  strace -c -f -o "$sfile" $all 2>/dev/null & local st=$!
  sleep 1
  bash "$peer/smtp-bench.sh" 127.0.0.1:$port "$rcpt" "$md" "$S" 500 "$L" > /dev/null
  sleep 0.5
  kill -INT "$st"; wait "$st" 2>/dev/null
  cp "$sfile" "$results/strace-$mta.txt"
  awk -v m=500 -v who="$mta" '
    $NF ~ /^(fsync|fdatasync|write|writev|read|recvmsg|sendmsg|openat|rename|renameat|renameat2|unlink|unlinkat|futex|epoll_wait|clone|clone3|wait4|total)$/ {
      calls = ($(NF-1) ~ /^[0-9]+$/) ? $(NF-1) : $(NF-2)
      if ($NF == "total") calls = $(NF-2)
      printf "%s %s %.2f/msg\n", who, $NF, calls / m
    }' "$sfile" | tee -a "$out"
}

{
  echo "smtp-bench: $(date -u +%FT%TZ), $(nproc) CPUs, smtp-source -s $S -m $M -l $L, rounds $ROUNDS"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); cargo/rustc running: $(pgrep -c 'cargo|rustc' || true)"
  echo "postfix: default_process_limit=$(postconf -h default_process_limit 2>/dev/null) local_destination_concurrency_limit=$(postconf -h local_destination_concurrency_limit 2>/dev/null) chroot=n"
} | tee "$out"

if [ -n "${BASE_BIN:-}" ]; then MTAS="$MTAS base-su base-sys"; fi
for mta in $MTAS; do
  case $mta in
    postfix) setup_postfix ;;
    *) [ -n "${BINS[$mta]:-}" ] || { echo "smtp-bench: unknown MTA $mta"; exit 1; }
       start_cursus "$mta" ;;
  esac
done
for r in $(seq 1 "$ROUNDS"); do
  for mta in $MTAS; do run_one "$mta" "$r"; done
done

if [ "${STRACE:-0}" = 1 ]; then
  for mta in $MTAS; do
    [ "$mta" = postfix ] || strace_one "$mta" "${DPID[$mta]}"
  done
fi

# Summary: medians, ratios to Postfix.
{
  echo
  echo "| MTA | acceptance msg/s | end-to-end msg/s | e2e ratio to Postfix | CPU ms/msg | fsync+fdatasync/msg | peak memory (PSS) MiB |"
  echo "|---|---|---|---|---|---|---|"
  pf=$(median <<< "${E2E[postfix]:-}")
  for mta in $MTAS; do
    e=$(median <<< "${E2E[$mta]}")
    ratio=$(awk -v a="$e" -v b="$pf" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')
    echo "| $mta | $(median <<< "${ACC[$mta]}") | $e | $ratio | $(median <<< "${CPU[$mta]}") | $(median <<< "${SYN[$mta]}") | $(median <<< "${RSS[$mta]}") |"
  done
  echo "(medians of $ROUNDS round(s); per round: ${E2E[*]})"
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"

postfix stop >/dev/null 2>&1
for p in "${pids[@]}"; do stop_pid "$p"; done
pids=()
grep -h 'status=deferred\|status=bounced\|cannot' "$work"/*/cursusd.log 2>/dev/null | head -5 | tee -a "$out"

# --- idle connections ------------------------------------------------------------------
if [ "$IDLE" -gt 0 ]; then
  start_cursus idle
  python3 "$top/bench/idle-connections.py" "127.0.0.1:${PORT[idle]}" "${DPID[idle]}" "$IDLE" | tee -a "$out"
  stop_pid "${DPID[idle]}"
fi
cp "$out" "$results/latest-smtp.txt"
rm -rf "$work"
