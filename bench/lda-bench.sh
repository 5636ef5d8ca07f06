#!/bin/bash
# cursus-lda deliveries per second through the root service, beside cursus-deliver (one exec
# per message) and procmail, in one run.
#
#   usage (as root): bash bench/lda-bench.sh [N]
#       N defaults to 2000. Needs release builds:
#       cargo build --release -p cursus-lda && scripts/build-release cursus-deliver
#       (cursus-deliver as shipped: the static front, with cursus-deliver-full beside it)
#       ROUNDS=3 runs every row 3 times, interleaved, and reports the median.
#
# Rows: cursus-lda with 1 and 8 concurrent clients (the client library, one connection per
# client, one request per message, the message passed as a descriptor: what cursusd does
# when deliveries do not wait for each other), and 8 clients sending deliver-many requests
# of 16 messages (what cursusd sends when deliveries for one mailbox queue up),
# Maildir with fsync of the file and of new/; cursus-deliver and procmail one process per
# message (../shared/tools/peer-bench/lda-bench.sh); the spawn floor /bin/true. Everything
# writes msg-2k.eml into the benchmark user's ~/Maildir. Not a timed test: run it on an idle
# machine; the script notes the load average.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (the service runs as root and delivers as the benchmark user)"
    exit 77
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
ROUNDS=${ROUNDS:-1}
LDA=$ROOT/target/release/cursus-lda
DELIVER=$ROOT/target/release/cursus-deliver
DELIVER_FULL=$ROOT/target/release/cursus-deliver-full
PEER=$ROOT/../shared/tools/peer-bench
U=cursus-bench
for b in "$LDA" "$DELIVER" "$DELIVER_FULL"; do
    [ -x "$b" ] || { echo "error: $b missing: cargo build --release -p cursus-lda && scripts/build-release cursus-deliver"; exit 1; }
done
command -v procmail >/dev/null || { echo "error: procmail missing: scripts/install-test-deps.sh"; exit 1; }
id "$U" >/dev/null 2>&1 || useradd -m -s /bin/bash "$U"
H=$(getent passwd "$U" | cut -d: -f6)
G=$(id -gn "$U")

W=$(mktemp -d /tmp/cursus-lda-bench.XXXXXX)
chmod 0755 "$W"
SERVICE=
# Between rows the previous row's Maildir is moved aside, not deleted: on ext4 without a
# journal, for a minute after inodes are freed, every new file scans past them
# (recently_deleted() in fs/ext4/ialloc.c; a profile of this bench had 14% of all CPU
# there), so a row right after a deletion paid for it. Deleted at the end, as in
# deliver-bench.sh.
SPENT=$H/.bench-spent
cleanup() { [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null; rm -rf "$W" "$SPENT"; }
if [ -e "$SPENT" ]; then
    rm -rf "$SPENT"
    echo "note: removed $SPENT left by an aborted run; waiting 61 s for its inodes to age"
    sleep 61
fi
set_aside() { # the previous row's Maildir, out of the way of the next row's creates
    [ -d "$H/Maildir" ] || return 0
    mkdir -p "$SPENT"
    # A new directory per row (rows run in subshells: no counter survives them).
    mv "$H/Maildir" "$(mktemp -d "$SPENT/row.XXXXXX")/"
}
trap cleanup EXIT
cp "$PEER/lda-bench.sh" "$PEER/msg-2k.eml" "$W/"
install -m 0755 "$DELIVER" "$W/cursus-deliver"
install -m 0755 "$DELIVER_FULL" "$W/cursus-deliver-full"
chmod 0644 "$W/msg-2k.eml"
rm -rf "$H/.config/cursus"
printf 'DEFAULT=$HOME/Maildir/\n' > "$H/.procmailrc"
chown "$U:$G" "$H/.procmailrc"
chmod 0600 "$H/.procmailrc"

cat > "$W/policy.toml" <<'POLICY'
min_uid = 1000

[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true
POLICY
"$LDA" serve --socket "$W/lda.sock" --policy "$W/policy.toml" 2>"$W/service.log" &
SERVICE=$!
for _ in $(seq 100); do "$LDA" request --socket "$W/lda.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done

as_user() {
    setpriv --reuid="$U" --regid="$G" --init-groups \
        env -i PATH=/usr/bin:/bin HOME="$H" USER="$U" LOGNAME="$U" SHELL=/bin/sh "$@"
}
lda_row() { # clients [messages per request]
    set_aside
    as_user mkdir -p "$H/Maildir/new" "$H/Maildir/cur" "$H/Maildir/tmp"
    sync
    line=$("$LDA" bench --socket "$W/lda.sock" --clients "$1" --count "$N" --user "$U" \
        --destination "maildir:$H/Maildir" --message "$W/msg-2k.eml" --batch "${2:-1}")
    new=$(find "$H/Maildir/new" -type f | wc -l)
    # rate= counts delivered answers only (failures are reported, never counted as speed);
    # the files in new/ must agree with deliveries=.
    delivered=$(sed -n 's/.*deliveries=\([0-9]*\).*/\1/p' <<< "$line")
    [ "$delivered" = "$new" ] || echo "warning: $delivered delivered answers but $new files in new/" >&2
    rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<< "$line")
    fail=$(sed -n 's/.*failures=\([0-9]*\).*/\1/p' <<< "$line")
    echo "$rate $new $fail"
}
exec_row() { # command...
    set_aside
    line=$(as_user bash "$W/lda-bench.sh" "$N" "$@")
    rate=$(sed -n 's/.* \([0-9]*\) deliveries\/s.*/\1/p' <<< "$line")
    new=$(sed -n 's/.*new=\([0-9]*\).*/\1/p' <<< "$line")
    fail=$(sed -n 's/.*failures=\([0-9]*\).*/\1/p' <<< "$line")
    echo "$rate $new $fail"
}

busy() { pgrep -x 'cargo|rustc|cc|ld' >/dev/null 2>&1 && echo " (cargo/rustc/cc running)" || true; }
echo "== $N deliveries of msg-2k.eml into ~$U/Maildir per row, $ROUNDS round(s); load before: $(cut -d' ' -f1-3 /proc/loadavg)$(busy)"
RAW=$W/raw
: > "$RAW"
for r in $(seq "$ROUNDS"); do
    echo "lda-1 $(lda_row 1)" >> "$RAW"
    echo "lda-8 $(lda_row 8)" >> "$RAW"
    echo "lda-8x16 $(lda_row 8 16)" >> "$RAW"
    echo "deliver $(exec_row "$W/cursus-deliver" -f bench@example.com -a "$U@localhost")" >> "$RAW"
    echo "procmail $(exec_row /usr/bin/procmail)" >> "$RAW"
    echo "floor $(exec_row /bin/true)" >> "$RAW"
    tail -6 "$RAW" | sed "s/^/round $r: /"
done
echo "   load after: $(cut -d' ' -f1-3 /proc/loadavg)$(busy)"
mkdir -p "$ROOT/bench/results"
python3 - "$RAW" "$N" <<'PY' | tee "$ROOT/bench/results/lda-bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, rate, new, fail = line.split()
    rows.setdefault(label, []).append((int(rate), int(new), int(fail)))
med = {k: statistics.median(r[0] for r in v) for k, v in rows.items()}
names = {"lda-1": "cursus-lda 1 client", "lda-8": "cursus-lda 8 clients",
         "lda-8x16": "  16 per request",
         "deliver": "cursus-deliver exec", "procmail": "procmail exec", "floor": "/bin/true exec"}
print(f"cursus-lda benchmark: N={sys.argv[2]} msg-2k.eml -> ~/Maildir, fsync file + new/ (procmail: file only)")
print(f"{'row':<22} {'deliv/s':>8} {'x procmail':>10} {'new':>6} {'fail':>5}")
for k in ["lda-1", "lda-8", "lda-8x16", "deliver", "procmail", "floor"]:
    if k not in med:
        continue
    new = min(r[1] for r in rows[k]) if k != "floor" else 0
    fail = sum(r[2] for r in rows[k])
    print(f"{names[k]:<22} {med[k]:>8.0f} {med[k] / med['procmail']:>10.2f} {new:>6} {fail:>5}")
target = 1500
print(f"target: cursus-lda 8 clients >= {target}/s: {'met' if med['lda-8'] >= target else 'NOT met'} ({med['lda-8']:.0f}/s)")
PY
