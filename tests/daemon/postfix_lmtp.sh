#!/bin/bash
# Postfix delivering into cursusd over LMTP (root: starts a private Postfix instance).
#
#   usage (as root): bash tests/daemon/postfix_lmtp.sh
#
# A private Postfix (its own config_directory, queue_directory and data_directory under a
# temporary directory; SMTP on a free loopback port, never 25; no chroot; its log in
# maillog_file) routes the domains localhost and example.test with a transport
# `lmtp:inet:[127.0.0.1]:PORT` to cursusd's LMTP listener. cursusd runs in single-user mode
# as the test user cursus-td, with example.test local and only known@example.test there.
# The system Postfix, /etc/postfix and port 25 are not touched.
#
# Checks: messages submitted to Postfix over SMTP (smtplib, and smtp-source -s 2 -m 50)
# arrive in cursusd's Maildirs exactly once with their Message-IDs; a two-recipient message
# gets one LMTP reply per recipient (both sent); an unknown recipient is refused at RCPT
# with 550 5.1.1, Postfix bounces it (dsn=5.1.1) and the bounce, from the null sender, comes
# back through LMTP into the sender's Maildir; Postfix's log shows status=sent through
# cursusd. At the end both are stopped and the directory removed.
# Exit 77 with SKIP when not root or when Postfix is not installed.
set -u

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (starts a private Postfix instance)"
    exit 77
fi
for t in postfix postconf smtp-source python3 setpriv useradd; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || {
        echo "SKIP: $t not installed (scripts/install-test-deps.sh)"
        exit 77
    }
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CURSUS_TARGET:-$ROOT/target/debug}
TUSER=cursus-td
START=$(date +%s)
pass=0
fail=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

[ -x "$TARGET/cursusd" ] || { echo "FAIL: $TARGET/cursusd not built"; exit 1; }
id "$TUSER" >/dev/null 2>&1 || useradd --system -M -d /nonexistent -s /usr/sbin/nologin "$TUSER"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

W=$(mktemp -d /tmp/cursus-pflmtp.XXXXXX)
chmod 0755 "$W"
PF=$W/postfix
CD=$W/cursus
DPID=
PF_STARTED=0
keep=0
cleanup() {
    set +e
    if [ "$PF_STARTED" = 1 ]; then
        postfix -c "$PF/etc" stop >/dev/null 2>&1
        for _ in $(seq 50); do postfix -c "$PF/etc" status >/dev/null 2>&1 || break; sleep 0.1; done
        postfix -c "$PF/etc" status >/dev/null 2>&1 && postfix -c "$PF/etc" abort >/dev/null 2>&1
    fi
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        kill -TERM "$DPID"
        wait "$DPID" 2>/dev/null
    fi
    if [ "$keep" = 1 ]; then
        echo "note: kept $W; Postfix log tail:"
        tail -n 20 "$PF/postfix.log" 2>/dev/null
        echo "cursusd log tail:"
        tail -n 20 "$CD/cursusd.log" 2>/dev/null
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- cursusd ----------------------------------------------------------------------------------
SMTP_PORT=$(free_port)
LMTP_PORT=$(free_port)
PF_PORT=$(free_port)
install -d -m 0755 "$CD" "$CD/bin"
for b in cursusd cursus; do install -m 0755 "$TARGET/$b" "$CD/bin/$b"; done
install -d -m 0700 -o "$TUSER" -g "$(id -gn "$TUSER")" "$CD/data"
DATA=$CD/data
cat > "$CD/cursus.toml" <<EOF
[smtp]
listen = ["127.0.0.1:$SMTP_PORT"]
[lmtp]
listen = ["127.0.0.1:$LMTP_PORT"]

[routing]
local_domains = ["localhost", "example.test"]

[[router]]
name = "mailboxes"
driver = "virtual"
table = { file = "$DATA/mailboxes" }
transport = "local"

[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:$DATA/mail/\${local}/Maildir"
EOF
chmod 0644 "$CD/cursus.toml"
printf '@localhost %s\nknown@example.test %s\n' "$TUSER" "$TUSER" > "$DATA/mailboxes"
chown "$TUSER:" "$DATA/mailboxes"
chmod 0644 "$DATA/mailboxes"
(cd "$CD" && exec setpriv --reuid="$TUSER" --regid="$TUSER" --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME="$DATA" "$CD/bin/cursusd" -c "$CD/cursus.toml" -d "$DATA" \
    > "$CD/cursusd.log" 2>&1 < /dev/null) &
DPID=$!
for _ in $(seq 200); do
    grep -q "listening for LMTP" "$CD/cursusd.log" 2>/dev/null && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
done
if ! grep -q "listening for LMTP" "$CD/cursusd.log"; then
    keep=1
    echo "FAIL: cursusd did not start"
    exit 1
fi
ok "cursusd listens for LMTP on 127.0.0.1:$LMTP_PORT"

# ---- the private Postfix ------------------------------------------------------------------------
install -d -m 0755 "$PF" "$PF/etc"
install -d -m 0755 "$PF/spool"
install -d -m 0700 -o postfix "$PF/lib"
LMTP_NEXTHOP="lmtp:inet:[127.0.0.1]:$LMTP_PORT"
cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/lib
mail_owner = postfix
setgid_group = postdrop
myhostname = pf-lmtp.test
mydomain = pf-lmtp.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = localhost, example.test
transport_maps = inline:{ localhost=$LMTP_NEXTHOP, example.test=$LMTP_NEXTHOP }
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
local_recipient_maps =
relay_recipient_maps =
alias_maps =
alias_database =
smtp_dns_support_level = disabled
lmtp_host_lookup = native
smtpd_peername_lookup = no
biff = no
maillog_file = $PF/postfix.log
maillog_file_prefixes = $W
notify_classes =
delay_warning_time = 0
EOF
cat > "$PF/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
chmod 0644 "$PF/etc/main.cf" "$PF/etc/master.cf"
if ! postfix -c "$PF/etc" check > "$W/pfcheck.log" 2>&1; then
    cat "$W/pfcheck.log"
fi
if postfix -c "$PF/etc" start > "$W/pfstart.log" 2>&1; then
    PF_STARTED=1
else
    cat "$W/pfstart.log"
    keep=1
    echo "FAIL: the private Postfix did not start"
    exit 1
fi
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PF_PORT), 1).close()" 2>/dev/null && break
    sleep 0.1
done
ok "private Postfix started (config $PF/etc, SMTP 127.0.0.1:$PF_PORT, lmtp to 127.0.0.1:$LMTP_PORT)"

# ---- mail through Postfix ----------------------------------------------------------------------
python3 - "$PF_PORT" <<'EOF'
import smtplib, sys
port = int(sys.argv[1])
def msg(mid, to):
    return f"From: pfsender@localhost\r\nTo: {to}\r\nSubject: {mid}\r\nMessage-ID: <{mid}@pf.test>\r\n\r\nvia Postfix and LMTP\r\n"
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    for i in range(3):
        s.sendmail("pfsender@localhost", ["pf1@localhost"], msg(f"pf-{i}", "pf1@localhost"))
    s.sendmail("pfsender@localhost", ["pf1@localhost", "pf2@localhost"], msg("pf-two", "pf1, pf2"))
    s.sendmail("pfsender@localhost", ["known@example.test"], msg("pf-known", "known@example.test"))
    s.sendmail("pfsender@localhost", ["nobody@example.test"], msg("pf-unknown", "nobody@example.test"))
EOF
check "six messages submitted to Postfix over SMTP" test $? = 0
smtp-source -s 2 -m 50 -f pfsender@localhost -t pfload@localhost "127.0.0.1:$PF_PORT"
check "smtp-source -s 2 -m 50 into Postfix" test $? = 0
smtp-source -s 1 -m 2 -l 1000000 -f pfsender@localhost -t pfbig@localhost "127.0.0.1:$PF_PORT"
check "smtp-source -m 2 -l 1000000 (1 MB messages) into Postfix" test $? = 0

count() { # LOCAL: files delivered
    ls "$DATA/mail/$1/Maildir/new" 2>/dev/null | wc -l
}
wait_count() { # LOCAL N
    for _ in $(seq 300); do
        [ "$(count "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
wait_count pf1 4
wait_count pf2 1
wait_count known 1
wait_count pfload 50
wait_count pfsender 1
wait_count pfbig 2
sleep 0.5

ids() { # LOCAL: the Message-IDs delivered there, sorted
    cat "$DATA/mail/$1/Maildir/new/"* 2>/dev/null | grep -i '^Message-ID:' | sed 's/^[^:]*: *//' | sort
}
check "pf1 got pf-0, pf-1, pf-2 and pf-two, each once" \
    test "$(ids pf1 | tr '\n' ' ')" = "<pf-0@pf.test> <pf-1@pf.test> <pf-2@pf.test> <pf-two@pf.test> "
check "pf2 got pf-two once (second LMTP recipient)" test "$(ids pf2 | tr '\n' ' ')" = "<pf-two@pf.test> "
check "known@example.test got pf-known once" test "$(ids known | tr '\n' ' ')" = "<pf-known@pf.test> "
check "smtp-source: 50 messages delivered" test "$(count pfload)" = 50
check "smtp-source: 50 distinct Message-IDs" test "$(ids pfload | uniq | wc -l)" = 50
VALIDATOR=$ROOT/../shared/tools/validate_maildir.py
if [ -f "$VALIDATOR" ]; then
    check "validate_maildir.py on the 50 messages Postfix handed over" python3 "$VALIDATOR" "$DATA/mail/pfload/Maildir" 50
else
    echo "SKIP: $VALIDATOR not found: no independent Maildir check"
fi
check "nothing for the unknown recipient" test "$(count nobody)" = 0
check "two 1 MB messages delivered whole" sh -c "[ \$(find '$DATA/mail/pfbig/Maildir/new' -type f -size +950k | wc -l) = 2 ]"
check "the delivered copies carry Postfix's and cursusd's Received fields" \
    sh -c "f=\$(ls -d '$DATA'/mail/pf1/Maildir/new/* | head -1); grep -q 'by pf-lmtp.test (Postfix)' \"\$f\" && grep -q '(cursusd) with LMTP' \"\$f\""
LOG=$PF/postfix.log
check "Postfix log: deliveries through cursusd (relay=127.0.0.1[127.0.0.1]:$LMTP_PORT, status=sent)" \
    test "$(grep -c "relay=127.0.0.1\[127.0.0.1\]:$LMTP_PORT.*status=sent" "$LOG")" -ge 59
check "Postfix log: the unknown recipient bounced with dsn=5.1.1 (550 at RCPT over LMTP)" \
    grep -q "to=<nobody@example.test>.*dsn=5.1.1.*status=bounced" "$LOG"
BOUNCE=$(ls -d "$DATA"/mail/pfsender/Maildir/new/* 2>/dev/null | head -1)
check "the bounce came back through LMTP to pfsender@localhost, from the null sender" \
    sh -c "[ -n '$BOUNCE' ] && grep -q '^Return-Path: <>' '$BOUNCE' && grep -q 'nobody@example.test' '$BOUNCE'"
check "Postfix's queue is empty" sh -c "[ -z \"\$(find '$PF/spool/active' '$PF/spool/deferred' '$PF/spool/incoming' -type f 2>/dev/null)\" ]"
check "cursusd's queue is empty" sh -c "[ -z \"\$(find '$DATA/queue' -name '*.jnl' 2>/dev/null)\" ]"
check "no panic in cursusd's log" sh -c "! grep -q panicked '$CD/cursusd.log'"

[ "$fail" = 0 ] || keep=1
echo "postfix_lmtp: $pass passed, $fail failed ($(($(date +%s) - START)) s)"
[ "$fail" = 0 ]
