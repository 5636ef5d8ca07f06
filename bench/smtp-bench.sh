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
  for m in postfix cursus-su cursus-sys idle; do rmdir "$cgroot/smtpbench-$m" 2>/dev/null; done
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
su_dir=$work/su        # single-user data directory (owned by cbench-su)
sys_dir=$work/sys      # system-mode data, configuration and policy (root's)
start_cursus_su() {
  mkdir -p "$su_dir/data"
  cat > "$su_dir/cursus.toml" <<EOF
[smtp]
listen = ["127.0.0.1:2527"]
max_connections = 20000
max_connections_per_client = 20000
EOF
  chown -R cbench-su: "$su_dir"
  chmod 700 "$su_dir/data"
  cg_new "$1"
  (
    echo $BASHPID > "$cgroot/smtpbench-$1/cgroup.procs"
    cd "$su_dir" || exit 1
    exec setpriv --reuid cbench-su --regid cbench-su --init-groups --reset-env \
      env HOME="$(getent passwd cbench-su | cut -d: -f6)" \
      "$BIN/cursusd" -c "$su_dir/cursus.toml" -d "$su_dir/data"
  ) 2>> "$su_dir/cursusd.log" &
  su_pid=$!
  pids+=("$su_pid")
  wait_port 2527
}
start_cursus_sys() {
  mkdir -p "$sys_dir/data"
  chmod 755 "$sys_dir"
  cat > "$sys_dir/lda-policy.toml" <<EOF
[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true
EOF
  chmod 644 "$sys_dir/lda-policy.toml"
  cat > "$sys_dir/cursus.toml" <<EOF
user = "cursus"
data_dir = "$sys_dir/data"

[smtp]
listen = ["127.0.0.1:2528"]

[lda]
policy = "$sys_dir/lda-policy.toml"
EOF
  cg_new cursus-sys
  (
    echo $BASHPID > "$cgroot/smtpbench-cursus-sys/cgroup.procs"
    exec "$BIN/cursusd" -c "$sys_dir/cursus.toml"
  ) 2>> "$sys_dir/cursusd.log" &
  sys_pid=$!
  pids+=("$sys_pid")
  wait_port 2528
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
declare -A ACC E2E CPU RSS
run_one() {  # run_one MTA ROUND
  local mta=$1 port rcpt md owner
  case $mta in
    postfix)    port=2526; rcpt=mbench@localhost; owner=mbench; md=/home/mbench/Maildir ;;
    cursus-su)  port=2527; rcpt=rcpt@localhost; owner=cbench-su; md=$su_dir/data/mail/rcpt/Maildir ;;
    cursus-sys) port=2528; rcpt=cbench@localhost; owner=cbench; md=$(getent passwd cbench | cut -d: -f6)/Maildir ;;
  esac
  fresh_maildir "$md" "$owner"
  local peakfile=$work/peak-$mta
  echo 0 > "$peakfile"
  sampler "$mta" "$peakfile" & local sp=$!
  local c0 c1 line
  c0=$(cg_cpu "$mta")
  line=$(bash "$peer/smtp-bench.sh" 127.0.0.1:$port "$rcpt" "$md" "$S" "$M" "$L" | tail -1)
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
  printf '%-10s round %d: %s | cpu/msg %s ms | peak pss %s MiB | files %s\n' \
    "$mta" "$2" "$line" "$cpu_ms" "$rss" "$files" | tee -a "$out"
  ACC[$mta]+="$acc "; E2E[$mta]+="$e2e "; CPU[$mta]+="$cpu_ms "; RSS[$mta]+="$rss "
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }'; }

strace_one() {  # strace_one MTA PID: one unmeasured run under strace -c -f
  local mta=$1 pid=$2 port rcpt md owner
  case $mta in
    cursus-su)  port=2527; rcpt=rcpt@localhost; owner=cbench-su; md=$su_dir/data/mail/rcpt/Maildir ;;
    cursus-sys) port=2528; rcpt=cbench@localhost; owner=cbench; md=$(getent passwd cbench | cut -d: -f6)/Maildir ;;
  esac
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

for mta in $MTAS; do
  case $mta in
    postfix) setup_postfix ;;
    cursus-su) start_cursus_su cursus-su ;;
    cursus-sys) start_cursus_sys ;;
  esac
done
for r in $(seq 1 "$ROUNDS"); do
  for mta in $MTAS; do run_one "$mta" "$r"; done
done

if [ "${STRACE:-0}" = 1 ]; then
  for mta in $MTAS; do
    case $mta in
      cursus-su) strace_one cursus-su "$su_pid" ;;
      cursus-sys) strace_one cursus-sys "$sys_pid" ;;
    esac
  done
fi

# Summary: medians, ratios to Postfix.
{
  echo
  echo "| MTA | acceptance msg/s | end-to-end msg/s | e2e ratio to Postfix | CPU ms/msg | peak memory (PSS) MiB |"
  echo "|---|---|---|---|---|---|"
  pf=$(median <<< "${E2E[postfix]:-}")
  for mta in $MTAS; do
    e=$(median <<< "${E2E[$mta]}")
    ratio=$(awk -v a="$e" -v b="$pf" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')
    echo "| $mta | $(median <<< "${ACC[$mta]}") | $e | $ratio | $(median <<< "${CPU[$mta]}") | $(median <<< "${RSS[$mta]}") |"
  done
  echo "(medians of $ROUNDS round(s); per round: ${E2E[*]})"
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"

postfix stop >/dev/null 2>&1
for p in "${pids[@]}"; do stop_pid "$p"; done
pids=()
grep -h 'status=deferred\|status=bounced\|cannot' "$su_dir/cursusd.log" "$sys_dir/cursusd.log" 2>/dev/null | head -5 | tee -a "$out"

# --- idle connections ------------------------------------------------------------------
if [ "$IDLE" -gt 0 ]; then
  start_cursus_su idle
  python3 "$top/bench/idle-connections.py" 127.0.0.1:2527 "$su_pid" "$IDLE" | tee -a "$out"
  stop_pid "$su_pid"
fi
cp "$out" "$results/latest-smtp.txt"
rm -rf "$work"
