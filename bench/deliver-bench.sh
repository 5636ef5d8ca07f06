#!/bin/bash
# cursus-deliver against the peer MDAs, one process per message into ~/Maildir, in one run.
#
#   usage (as root): bash bench/deliver-bench.sh [N] [path/to/cursus-deliver]
#       N defaults to 2000. Without a path, scripts/build-release cursus-deliver builds
#       target/release/cursus-deliver (the front: a static PIE with no C library, as shipped) and
#       cursus-deliver-full; with a path, cursus-deliver-full must be beside it.
#       ROUNDS=3 bash bench/deliver-bench.sh: run every MDA 3 times, interleaved, and report
#       the median rate (default 1 round). Run it on an otherwise idle machine: the script
#       notes the load average and any cargo/rustc running, since one compile on a 2-core
#       machine halves the rates.
#
# Uses ../shared/tools/peer-bench/lda-bench.sh (one process per message of msg-2k.eml into a
# fresh ~/Maildir, as the mailbox owner) for: the spawn floor /bin/true, procmail, maildrop,
# dovecot-lda and cursus-deliver (the front, which makes this delivery itself; the reference
# rows with -o are handed to cursus-deliver-full, and one row runs cursus-deliver-full
# directly to show what the front saves). Each runs as the test user cursus-bench with its own
# config in that user's home (see lda-bench.sh's comments). Then, for one delivery each,
# strace records what each MDA fsyncs, and /usr/bin/time -v the peak RSS of cursus-deliver
# for a 20 MB message. Results go to bench/results/ (gitignored) and are printed.
#
# Between runs the previous run's Maildir is moved aside, not deleted (lda-bench.sh would
# rm -rf it): on ext4 without a journal, for a minute after inodes are freed, every new file
# scans past them (recently_deleted() in fs/ext4/ialloc.c), which made each MDA pay for the
# harness deleting the previous MDA's N messages (creating a file went from 0.03 ms to
# 0.7 ms on the test machine), a cost /bin/true never pays and that depended on the order.
# KEEP_DELETING=1 restores the old behaviour. The moved Maildirs are deleted after the runs.
# Needs the packages from scripts/install-test-deps.sh (procmail maildrop dovecot-core
# strace time). Not a timed test: the numbers depend on the machine and its disk.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (creates the benchmark user, runs strace on setgid binaries)"
    exit 77
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
if [ -z "${2:-}" ]; then
    "$ROOT/scripts/build-release" cursus-deliver
fi
BIN=${2:-$ROOT/target/release/cursus-deliver}
FULL=$(dirname "$BIN")/cursus-deliver-full
PEER=$ROOT/../shared/tools/peer-bench
U=cursus-bench
RESULTS=$ROOT/bench/results

[ -x "$BIN" ] || { echo "error: $BIN not found: scripts/build-release cursus-deliver"; exit 1; }
[ -x "$FULL" ] || { echo "error: $FULL not found: install cursus-deliver-full beside cursus-deliver"; exit 1; }
[ -f "$PEER/lda-bench.sh" ] || { echo "error: $PEER/lda-bench.sh not found"; exit 1; }
for t in procmail maildrop /usr/lib/dovecot/dovecot-lda strace /usr/bin/time python3; do
    command -v "$t" >/dev/null || { echo "error: $t missing: run scripts/install-test-deps.sh"; exit 1; }
done
case $N in '' | *[!0-9]*) echo "error: N must be a number"; exit 64 ;; esac

id "$U" >/dev/null 2>&1 || useradd -m -s /bin/bash "$U"
H=$(getent passwd "$U" | cut -d: -f6)
G=$(id -gn "$U")

# Everything the user runs lives in a directory it can read and execute.
W=$(mktemp -d /tmp/cursus-bench.XXXXXX)
chmod 0755 "$W"
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
cp "$PEER/lda-bench.sh" "$PEER/msg-2k.eml" "$W/"
install -m 0755 "$BIN" "$W/cursus-deliver"
install -m 0755 "$FULL" "$W/cursus-deliver-full"
chmod 0644 "$W/msg-2k.eml"

# --- per-user configuration of the peers -------------------------------------------------------
rm -rf "$H/Maildir" "$H/Maildir-rss" "$H/.config/cursus"
printf 'DEFAULT=$HOME/Maildir/\n' > "$H/.procmailrc"
printf 'to "$HOME/Maildir/"\n' > "$H/.mailfilter"
cat > "$H/dovecot-lda.conf" <<EOF
mail_location = maildir:~/Maildir
postmaster_address = postmaster@localhost
log_path = $H/dovecot-lda.log
ssl = no
EOF
chown "$U:$G" "$H/.procmailrc" "$H/.mailfilter" "$H/dovecot-lda.conf"
chmod 0600 "$H/.procmailrc" "$H/.mailfilter"
chmod 0644 "$H/dovecot-lda.conf"

# the MDAs, by label
declare -A CMD
CMD[floor]="/bin/true"
CMD[procmail]="/usr/bin/procmail"
CMD[maildrop]="/usr/bin/maildrop"
CMD[dovecot-lda]="/usr/lib/dovecot/dovecot-lda -c $H/dovecot-lda.conf -f bench@example.com -a $U@localhost"
CMD[cursus-deliver]="$W/cursus-deliver -f bench@example.com -a $U@localhost"
# reference rows: procmail's durability (the file only), and none at all
CMD[cursus-fsyncfile]="$W/cursus-deliver -f bench@example.com -a $U@localhost -o fsync=file"
CMD[cursus-nofsync]="$W/cursus-deliver -f bench@example.com -a $U@localhost -o fsync=none"
# reference row: the full program alone, as cursus-deliver was before the front
CMD[cursus-full]="$W/cursus-deliver-full -f bench@example.com -a $U@localhost"
ORDER="floor procmail maildrop dovecot-lda cursus-deliver cursus-fsyncfile cursus-nofsync cursus-full"

as_user() { # runs a command as the benchmark user with an MTA-like clean environment
    setpriv --reuid="$U" --regid="$G" --init-groups \
        env -i PATH=/usr/bin:/bin HOME="$H" USER="$U" LOGNAME="$U" SHELL=/bin/sh "$@"
}

# The reference rows need -o fsync=file|none (newer binaries); drop a row the binary refuses.
for m in cursus-fsyncfile cursus-nofsync; do
    rm -rf "$H/Maildir-probe"
    # shellcheck disable=SC2086
    if ! as_user ${CMD[$m]} --maildir "$H/Maildir-probe" < "$W/msg-2k.eml" >/dev/null 2>&1 &&
        [ "$m" = cursus-nofsync ]; then
        CMD[$m]=${CMD[$m]/fsync=none/fsync=false} # before fsync modes, fsync was a boolean
    fi
    # shellcheck disable=SC2086
    if ! msg=$(as_user ${CMD[$m]} --maildir "$H/Maildir-probe" < "$W/msg-2k.eml" 2>&1); then
        echo "note: reference row $m dropped: ${CMD[$m]##*/}: $msg"
        ORDER=${ORDER/ $m/}
    fi
done
rm -rf "$H/Maildir-probe"

SPENT=$H/.bench-spent
# The previous run deleted its Maildirs at its end: let those inodes age too.
DELETED_AT=$H/.bench-deleted-at
if [ -e "$DELETED_AT" ]; then
    age=$(( $(date +%s) - $(stat -c %Y "$DELETED_AT") ))
    if [ "$age" -lt 61 ]; then
        echo "note: the previous run deleted its Maildirs ${age} s ago; waiting $((61 - age)) s for their inodes to age"
        sleep $((61 - age))
    fi
fi
if [ -e "$SPENT" ]; then
    rm -rf "$SPENT"
    echo "note: removed $SPENT left by an aborted run; waiting 61 s for its inodes to age"
    sleep 61
fi
set_aside() { # the previous run's Maildir, moved out of lda-bench.sh's rm -rf
    [ "${KEEP_DELETING:-0}" = 1 ] && return
    [ -d "$H/Maildir" ] || return 0
    mkdir -p "$SPENT"
    mv "$H/Maildir" "$SPENT/$1"
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
OUT=$RESULTS/deliver-bench-$STAMP.txt
RAW=$W/raw.txt
: > "$RAW"

ROUNDS=${ROUNDS:-1}
case $ROUNDS in '' | *[!0-9]* | 0) echo "error: ROUNDS must be a positive number"; exit 64 ;; esac
busy() { pgrep -x 'cargo|rustc|cc|ld' >/dev/null 2>&1 && echo " (cargo/rustc/cc running)" || true; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)$(busy)"
echo "== $N deliveries each of msg-2k.eml, one process per message, into $H/Maildir, $ROUNDS round(s)"
echo "   load average before: $LOAD_BEFORE"
sync
for r in $(seq "$ROUNDS"); do
    for m in $ORDER; do
        set_aside "$r-$m"
        # shellcheck disable=SC2086 # CMD values are word lists
        line=$(as_user bash "$W/lda-bench.sh" "$N" ${CMD[$m]})
        echo "round $r $m: $line"
        echo "$m $line" >> "$RAW"
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)$(busy)"
rm -rf "$SPENT"
touch "$DELETED_AT"

# --- what each one fsyncs: strace one delivery into a fresh Maildir ---------------------------
echo "== fsync calls of one delivery (strace -f -y -e trace=fsync,fdatasync,sync_file_range,syncfs,sync)"
for m in $ORDER; do
    rm -rf "$H/Maildir"
    as_user mkdir -p "$H/Maildir/new" "$H/Maildir/cur" "$H/Maildir/tmp"
    # shellcheck disable=SC2086
    env -i PATH=/usr/bin:/bin HOME="$H" USER="$U" LOGNAME="$U" SHELL=/bin/sh \
        strace -f -y -qq -u "$U" -e trace=fsync,fdatasync,sync_file_range,syncfs,sync \
        -o "$W/strace.$m" ${CMD[$m]} < "$W/msg-2k.eml" >/dev/null 2>&1 || true
    grep -E 'sync' "$W/strace.$m" | sed "s/^/  $m: /" | cut -c1-160 || true
done
rm -rf "$H/Maildir"

# --- peak RSS of cursus-deliver for a 20 MB message ----------------------------------------
python3 - "$W/msg-20m.eml" <<'EOF'
import sys
line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrstuvwxyz.\n"
body = line * (20 * 1024 * 1024 // len(line) + 1)
with open(sys.argv[1], "wb") as f:
    f.write(b"From: a@example.org\nTo: b@example.org\nSubject: 20 MB\n\n")
    f.write(body)
EOF
chmod 0644 "$W/msg-20m.eml"
MSGSIZE=$(stat -c %s "$W/msg-20m.eml")
# An existing Maildir, so the front delivers (a missing one is created by cursus-deliver-full).
as_user mkdir -p "$H/Maildir-rss/tmp" "$H/Maildir-rss/new" "$H/Maildir-rss/cur"
as_user /usr/bin/time -v "$W/cursus-deliver" -f bench@example.com --maildir "$H/Maildir-rss" \
    < "$W/msg-20m.eml" > "$W/time.out" 2>&1 || true
RSS=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$W/time.out")
ELAPSED=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): *//p' "$W/time.out")
STORED=$(find "$H/Maildir-rss/new" -type f -printf '%s\n' 2>/dev/null | head -1)
rm -rf "$H/Maildir-rss"

# --- the table --------------------------------------------------------------------------------
python3 - "$RAW" "$W" "$N" "${RSS:-?}" "$MSGSIZE" "${STORED:-0}" "${ELAPSED:-?}" "$H" "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" "$(uname -r)" "$(nproc)" "$BIN ($(file -b "$BIN" | grep -o 'static-pie linked\|statically linked\|dynamically linked' || echo '?'))" "${KEEP_DELETING:-0}" <<'EOF' | tee "$OUT"
import os, re, statistics, sys
raw, w, n, rss, msgsize, stored, elapsed, home, rounds, lb, la, kernel, cpus, binary, deleting = sys.argv[1:]
n = int(n)
runs = {}
for line in open(raw):
    label, rest = line.split(" ", 1)
    m = re.search(r"N=(\d+): ([\d.]+)s \d+ deliveries/s new=(\d+) failures=(\d+)", rest)
    runs.setdefault(label, []).append(
        dict(rate=int(m.group(1)) / float(m.group(2)), new=int(m.group(3)), fail=int(m.group(4))))
rows = {label: dict(rate=statistics.median(r["rate"] for r in rs),
                    new=min(r["new"] for r in rs), fail=sum(r["fail"] for r in rs),
                    spread=(min(r["rate"] for r in rs), max(r["rate"] for r in rs)))
        for label, rs in runs.items()}

def fsyncs(label):
    path = os.path.join(w, f"strace.{label}")
    calls = []
    for line in open(path):
        m = re.search(r"\b(fsync|fdatasync|sync_file_range|syncfs|sync)\((\d+<([^>]*)>)?", line)
        if not m or "resumed" in line:
            continue
        target = m.group(3) or ""
        target = target.replace(home + "/Maildir", "~/Maildir")
        target = re.sub(r"/(tmp|new|cur)/[^/]+$", r"/\1/<msg>", target)
        target = re.sub(r"/dovecot[^/]*$", "/<dovecot index>", target)
        calls.append(f"{m.group(1)} {target}" if target else m.group(1))
    if not calls:
        return "nothing"
    seen = []
    for c in calls:
        k = f"{c} x{calls.count(c)}" if calls.count(c) > 1 else c
        if k not in seen:
            seen.append(k)
    return ", ".join(seen)

order = ["floor", "procmail", "maildrop", "dovecot-lda", "cursus-deliver", "cursus-fsyncfile",
         "cursus-nofsync", "cursus-full"]
names = {"floor": "/bin/true", "cursus-fsyncfile": "cursus fsync=file", "cursus-nofsync": "cursus fsync=none",
         "cursus-full": "cursus-deliver-full"}
pm = rows["procmail"]["rate"]
fl = rows["floor"]["rate"]
print(f"cursus-deliver benchmark: N={n} one process per message, msg-2k.eml -> ~/Maildir, "
      f"{rounds} round(s){' (median)' if int(rounds) > 1 else ''}")
print(f"machine: {cpus} CPU(s), Linux {kernel}; load average before {lb}, after {la}")
print(f"{'MDA':<19} {'deliv/s':>8}  {'x procmail':>10} {'x floor':>8} {'new':>6} {'fail':>5}  fsyncs (one delivery)")
order = [l for l in order if l in rows]
for label in order:
    r = rows[label]
    name = names.get(label, label)
    broken = label != "floor" and (r["fail"] or r["new"] != n)
    print(f"{name:<19} {r['rate']:8.0f}{'!' if broken else ' '} {r['rate']/pm:10.2f} {r['rate']/fl:8.2f} "
          f"{r['new'] if label != 'floor' else '-':>6} {r['fail']:>5}  {fsyncs(label)}")
c = rows["cursus-deliver"]
if any(l != "floor" and (rows[l]["fail"] or rows[l]["new"] != n) for l in order):
    print("! = some deliveries failed or are missing: that rate is not comparable")
if int(rounds) > 1:
    print("spread (min-max deliveries/s): " + ", ".join(
        f"{names.get(l, l)} {rows[l]['spread'][0]:.0f}-{rows[l]['spread'][1]:.0f}" for l in order))
print()
print(f"target >= 1.5x procmail: {c['rate']/pm:.2f}x -> {'met' if c['rate'] >= 1.5*pm else 'NOT met'}")
print(f"target >= 0.8x floor:    {c['rate']/fl:.2f}x -> {'met' if c['rate'] >= 0.8*fl else 'NOT met'}")
ok = c["new"] == n and c["fail"] == 0
print("(cursus-deliver is the default, fsync=full: the file, then new/, delivered by the front.")
print(" Reference rows: -o fsync=file, procmail's durability, and -o fsync=none, no durability,")
print(" are handed by the front to cursus-deliver-full (one more exec); cursus-deliver-full is")
print(" the full program started directly, as every delivery ran before the front.)")
print("Each run starts with an empty Maildir; the previous one was " +
      ("deleted just before (KEEP_DELETING=1)." if deleting == "1" else
       "moved aside, not deleted (see the script header)."))
print(f"cursus-deliver delivered {c['new']}/{n} (failures {c['fail']}) {'ok' if ok else 'PROBLEM'}")
print(f"binary: {binary}, beside cursus-deliver-full")
print(f"peak RSS of cursus-deliver for a {int(msgsize)/1e6:.1f} MB message: {rss} KiB "
      f"(stored {int(stored)/1e6:.1f} MB, wall {elapsed})")
EOF
cp "$OUT" "$RESULTS/latest.txt"
echo "results: $OUT"
