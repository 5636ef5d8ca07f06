#!/bin/bash
# Fault test: cursus-deliver on a full file system.
#
#   usage (as root): bash tests/faults/fullfs.sh [path/to/cursus-deliver]
#
# Mounts small tmpfs file systems (256 KiB, and one with almost no inodes) and delivers
# messages bigger than the free space into a Maildir, a Maildir++ folder, an mbox and an MH
# folder. ENOSPC is a temporary condition: each must exit 75 with one "4.3.1 ..." line on
# stderr, leave nothing in new/ (or no new MH message), nothing in tmp/, and an mbox exactly
# as long (and with the same bytes) as before. A message that fits must still be delivered
# afterwards. The deliveries run as an unprivileged test user (cursus-tfs), as an MTA would
# run them. Exit 77 with "SKIP: ..." when not root.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (mounts tmpfs file systems)"
    exit 77
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/release/cursus-deliver}
SHARED=$ROOT/../shared/tools
U=cursus-tfs

pass=0
fail=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
die() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

[ -x "$BIN" ] || die "cursus-deliver binary not found at $BIN"
FULL=$(dirname "$BIN")/cursus-deliver-full
[ -x "$FULL" ] || die "cursus-deliver-full not found at $FULL (it is installed beside cursus-deliver)"
for t in setpriv mount umount useradd python3; do
    command -v "$t" >/dev/null || die "$t not installed: run scripts/install-test-deps.sh"
done
id "$U" >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$U"
UID_=$(id -u "$U")
GID_=$(id -g "$U")

W=$(mktemp -d /tmp/cursus-fullfs.XXXXXX)
chmod 0755 "$W"
MOUNTS=()
cleanup() {
    set +e
    for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install -m 0755 "$BIN" "$W/cursus-deliver"
install -m 0755 "$FULL" "$W/cursus-deliver-full"
install -d -m 0755 -o "$U" -g "$GID_" "$W/home"

# mnt NAME OPTIONS: a tmpfs owned by the test user
mnt() {
    mkdir -p "$W/$1"
    mount -t tmpfs -o "$2,mode=0700,uid=$UID_,gid=$GID_" "cursus-test-$1" "$W/$1"
    MOUNTS+=("$W/$1")
}

# msg FILE KB: a message of about KB kibibytes
msg() {
    python3 - "$1" "$2" <<'EOF'
import sys
path, kb = sys.argv[1], int(sys.argv[2])
head = b"From: a@example.org\nTo: b@example.org\nSubject: full file system test\n\n"
body = b"From the beginning: a body line the mbox writer must quote\n"
i = 0
while len(head) + len(body) < kb * 1024:
    body += b"%08d " % i + b"y" * 70 + b"\n"
    i += 1
open(path, "wb").write(head + body)
EOF
}
msg "$W/small.eml" 2
msg "$W/big.eml" 400

# deliver ARGS...: runs cursus-deliver as the test user with a clean MTA-like environment;
# sets RC and ERR (stderr)
deliver() {
    RC=0
    setpriv --reuid="$UID_" --regid="$GID_" --clear-groups \
        env -i PATH=/usr/bin:/bin HOME="$W/home" USER="$U" LOGNAME="$U" \
        SENDER=a@example.org RECIPIENT="$U@localhost" \
        "$W/cursus-deliver" "$@" <"$MSG" >"$W/out" 2>"$W/err" || RC=$?
    ERR=$(cat "$W/out" "$W/err")
}
# expect_enospc WHAT: exit 75, exactly one line starting 4.3.1
expect_enospc() {
    local lines
    lines=$(printf '%s' "$ERR" | grep -c '' || true)
    if [ "$RC" -eq 75 ] && [ "$lines" -eq 1 ] && [ "${ERR#4.3.1 }" != "$ERR" ]; then
        ok "$1: exit 75, '$ERR'"
    else
        bad "$1: want exit 75 and one line '4.3.1 ...', got exit $RC and: $ERR"
    fi
}
count() { find "$1" -maxdepth 1 -type f | wc -l; }

# --- 1. Maildir: big message on an empty 256 KiB file system --------------------------------
mnt md "size=256k"
install -d -m 0700 -o "$U" -g "$GID_" "$W/md/Maildir"
MSG=$W/big.eml deliver --maildir "$W/md/Maildir"
expect_enospc "maildir, 400 KiB message into 256 KiB"
if [ -d "$W/md/Maildir/new" ] && [ "$(count "$W/md/Maildir/new")" -eq 0 ] && [ "$(count "$W/md/Maildir/tmp")" -eq 0 ]; then
    ok "maildir: nothing in new/, nothing left in tmp/"
else
    bad "maildir: new/ $(count "$W/md/Maildir/new" 2>/dev/null) file(s), tmp/ $(count "$W/md/Maildir/tmp" 2>/dev/null) file(s)"
fi
used=$(df --output=used -k "$W/md" | tail -1 | tr -d ' ')
if [ "$used" -le 8 ]; then ok "maildir: space given back (${used} KiB used)"; else bad "maildir: ${used} KiB still used after the failed delivery"; fi

# --- 2. Maildir: one message delivered, then a big one fails, then a small one works -------
MSG=$W/small.eml deliver --maildir "$W/md/Maildir"
[ "$RC" -eq 0 ] && ok "maildir: small message delivered (exit 0)" || bad "maildir: small message: exit $RC: $ERR"
MSG=$W/big.eml deliver --maildir "$W/md/Maildir"
expect_enospc "maildir with one message, 400 KiB message"
MSG=$W/small.eml deliver --maildir "$W/md/Maildir"
[ "$RC" -eq 0 ] && ok "maildir: small message after the failure delivered" || bad "maildir: small message after failure: exit $RC: $ERR"
if out=$(python3 "$SHARED/validate_maildir.py" "$W/md/Maildir" 2 2>&1); then ok "$out"; else bad "$out"; fi

# --- 3. Maildir++ folder on the same full file system ---------------------------------------
MSG=$W/big.eml deliver --maildir "$W/md/Maildir" -m Lists.rust
expect_enospc "maildir folder -m Lists.rust, 400 KiB message"
n=$(find "$W/md/Maildir" -type f -regex '.*/\(new\|cur\|tmp\)/[^/]*' | wc -l)
[ "$n" -eq 2 ] && ok "maildir folder: still exactly the 2 earlier messages, tmp/ empty" || bad "maildir folder: $n message files (want 2)"

# --- 4. Maildir: no inodes left --------------------------------------------------------------
mnt ino "size=1m,nr_inodes=6"
install -d -m 0700 -o "$U" -g "$GID_" "$W/ino/Maildir" "$W/ino/Maildir/tmp" "$W/ino/Maildir/new" "$W/ino/Maildir/cur"
i=0
while setpriv --reuid="$UID_" --regid="$GID_" --clear-groups touch "$W/ino/fill$i" 2>/dev/null && [ $i -lt 20 ]; do i=$((i + 1)); done
MSG=$W/small.eml deliver --maildir "$W/ino/Maildir"
expect_enospc "maildir, no free inode"
[ "$(count "$W/ino/Maildir/new")" -eq 0 ] && [ "$(count "$W/ino/Maildir/tmp")" -eq 0 ] &&
    ok "maildir, no free inode: nothing in new/ or tmp/" || bad "maildir, no free inode: files left"

# --- 5. mbox: length and bytes unchanged after a failed append -------------------------------
mnt mb "size=256k"
MSG=$W/small.eml deliver --mbox "$W/mb/mbox"
[ "$RC" -eq 0 ] && ok "mbox: small message delivered (exit 0)" || bad "mbox: small message: exit $RC: $ERR"
before=$(stat -c %s "$W/mb/mbox" 2>/dev/null || echo 0)
sum_before=$(sha256sum <"$W/mb/mbox" 2>/dev/null || true)
MSG=$W/big.eml deliver --mbox "$W/mb/mbox"
expect_enospc "mbox, 400 KiB message into 256 KiB"
after=$(stat -c %s "$W/mb/mbox")
if [ "$before" -eq "$after" ] && [ "$sum_before" = "$(sha256sum <"$W/mb/mbox")" ]; then
    ok "mbox: length restored ($after bytes) and content unchanged"
else
    bad "mbox: length $before before, $after after (or content changed)"
fi
[ ! -e "$W/mb/mbox.lock" ] && ok "mbox: no dotlock left behind" || bad "mbox: mbox.lock left behind"
leftover=$(find "$W/mb" -mindepth 1 ! -name mbox | head -3)
[ -z "$leftover" ] && ok "mbox: no stray files in the mailbox directory" || bad "mbox: stray files: $leftover"
MSG=$W/small.eml deliver --mbox "$W/mb/mbox"
[ "$RC" -eq 0 ] && ok "mbox: small message after the failure delivered" || bad "mbox: small message after failure: exit $RC: $ERR"
if out=$(python3 "$SHARED/validate_mbox.py" "$W/mb/mbox" 2 2>&1); then ok "$out"; else bad "$out"; fi

# --- 6. mbox whose file system fills up exactly at the dotlock -------------------------------
# (the mbox directory is full before we start: the dotlock cannot be created either)
mnt mb2 "size=64k"
MSG=$W/small.eml deliver --mbox "$W/mb2/mbox"
before=$(stat -c %s "$W/mb2/mbox" 2>/dev/null || echo 0)
setpriv --reuid="$UID_" --regid="$GID_" --clear-groups dd if=/dev/zero of="$W/mb2/filler" bs=4k count=64 2>/dev/null || true
MSG=$W/big.eml deliver --mbox "$W/mb2/mbox"
after=$(stat -c %s "$W/mb2/mbox" 2>/dev/null || echo 0)
if [ "$RC" -eq 75 ] && [ "$before" -eq "$after" ]; then
    ok "mbox on a completely full file system: exit 75 ($ERR), length unchanged"
else
    bad "mbox on a completely full file system: exit $RC ($ERR), length $before -> $after"
fi

# --- 7. MH folder -----------------------------------------------------------------------------
mnt mh "size=256k"
install -d -m 0700 -o "$U" -g "$GID_" "$W/mh/inbox"
MSG=$W/small.eml deliver --mh "$W/mh/inbox"
[ "$RC" -eq 0 ] && ok "mh: small message delivered (exit 0)" || bad "mh: small message: exit $RC: $ERR"
list_before=$(ls -A "$W/mh/inbox" | sort | tr '\n' ' ')
MSG=$W/big.eml deliver --mh "$W/mh/inbox"
expect_enospc "mh, 400 KiB message into 256 KiB"
list_after=$(ls -A "$W/mh/inbox" | sort | tr '\n' ' ')
if [ "$list_before" = "$list_after" ]; then
    ok "mh: folder unchanged ($list_after)"
else
    bad "mh: folder changed: before [$list_before] after [$list_after]"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
