#!/bin/bash
# Interop test: cursus-deliver under a real Postfix (Debian 12's postfix package).
#
#   usage (as root): bash tests/interop/postfix.sh [path/to/cursus-deliver]
#
# Exit 77 with "SKIP: ..." when not root (or when a Postfix is already running here: this
# test reconfigures Postfix and will not touch a live MTA). Needs the packages from
# scripts/install-test-deps.sh (postfix, swaks, python3).
#
# The Postfix configuration is read from docs/mta-integration.md (the blocks marked
# "cursus-test: postfix-main-local", "postfix-main-virtual", "postfix-master-pipe" and
# "forward"), so the documented snippets are exactly the tested ones. Only three strings are
# replaced: the binary path, the vmail user and the /var/vmail directory.
#
# What runs:
#   Postfix loopback-only (127.0.0.1:2526, no DNS, no chroot), log in /var/log/postfix.log.
#   A  local(8) mailbox_command  -> cursus-deliver as the recipient (test users cursus-*)
#   C  local(8) .forward "|cursus-deliver"
#   B  pipe(8) transport "cursus" (flags=DRhu user=cursus-vmail) for virtual.example
#   Mail is submitted with Postfix's sendmail and over SMTP (swaks); each message must arrive
#   once, with its body byte-identical, its header lines kept in order, and Return-Path and
#   Delivered-To present exactly once. Probes: a Maildir whose tmp/ is mode 0500 and a full
#   filesystem make cursus-deliver exit 75 -> Postfix must defer (log, postqueue -p); a
#   Maildir++ quota (maildirsize "1000S") makes it exit 77 with 5.2.2 -> Postfix must bounce
#   with dsn=5.2.2, and the bounce (null sender) must itself be delivered by cursus-deliver.
# At the end Postfix is stopped, the test's queue entries are deleted and main.cf/master.cf
# are put back. The test users (cursus-*) are kept; their mailboxes are wiped on the next run.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (configures and starts Postfix, creates users)"
    exit 77
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/release/cursus-deliver}
DOC=$ROOT/docs/mta-integration.md
CHECK=$ROOT/tests/interop/check_message.py
VALIDATE=$ROOT/../shared/tools/validate_maildir.py
INST=/usr/local/lib/cursus-test          # where the delivery users can execute the binary
STATE=/var/tmp/cursus-postfix-test.backup # original main.cf/master.cf while the test runs
VROOT=/var/tmp/cursus-test-vmail          # stands for the doc's /var/vmail
VUSER=cursus-vmail                        # stands for the doc's vmail
LOG=/var/log/postfix.log
PORT=2526
DOMAIN=virtual.example

pass=0
fail=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
die() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

for t in postfix postconf postqueue postsuper swaks python3 useradd; do
    command -v "$t" >/dev/null || die "$t not installed: run scripts/install-test-deps.sh as root"
done
[ -x "$BIN" ] || die "cursus-deliver binary not found at $BIN (scripts/build-release cursus-deliver)"
FULL=$(dirname "$BIN")/cursus-deliver-full
[ -x "$FULL" ] || die "cursus-deliver-full not found at $FULL (it is installed beside cursus-deliver)"
[ -f "$DOC" ] || die "$DOC missing"

# --- a leftover from an aborted run is put back first; a live Postfix is not touched --------
if [ -d "$STATE" ]; then
    echo "note: restoring Postfix configuration left by an aborted run"
    postfix stop >/dev/null 2>&1 || true
    cp -p "$STATE/main.cf" "$STATE/master.cf" /etc/postfix/
    rm -rf "$STATE"
fi
if postfix status >/dev/null 2>&1; then
    echo "SKIP: a Postfix is already running on this machine; this test reconfigures Postfix and does not touch a live MTA (stop it first)"
    exit 77
fi

WORK=$(mktemp -d /tmp/cursus-postfix.XXXXXX)
STARTED=0
cleanup() {
    set +e
    if [ "$STARTED" = 1 ]; then
        # delete only this test's queue files (deferred probes), then stop Postfix
        postqueue -j 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    q = json.loads(line)
    if any(r["address"].startswith("cursus-") or r["address"].endswith("@virtual.example")
           for r in q.get("recipients", [])):
        print(q["queue_id"])' | postsuper -d - >/dev/null 2>&1
        postfix stop >/dev/null 2>&1
        for _ in $(seq 50); do postfix status >/dev/null 2>&1 || break; sleep 0.2; done
        postfix status >/dev/null 2>&1 && echo "WARNING: postfix still running"
    fi
    if [ -d "$STATE" ]; then
        cp -p "$STATE/main.cf" "$STATE/master.cf" /etc/postfix/
        rm -rf "$STATE"
    fi
    mountpoint -q /home/cursus-tfull/Maildir 2>/dev/null && umount /home/cursus-tfull/Maildir
    rm -rf "$INST" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binary where every delivery user can run it ------------------------------------------
mkdir -p "$INST"
chmod 0755 "$INST"
install -m 0755 "$BIN" "$INST/cursus-deliver"
install -m 0755 "$FULL" "$INST/cursus-deliver-full"

# --- snippets from the documentation ---------------------------------------------------------
snippet() {
    awk -v n="$1" '
        $0 == "<!-- cursus-test: " n " -->" { f = 1; next }
        f == 1 && /^```/ { f = 2; next }
        f == 2 && /^```/ { exit }
        f == 2 { print }' "$DOC" |
        sed -e "s#/usr/lib/cursus/cursus-deliver#$INST/cursus-deliver#g" \
            -e "s#user=vmail#user=$VUSER#g" -e "s#/var/vmail#$VROOT#g"
}
MAIN_LOCAL=$(snippet postfix-main-local)
MAIN_VIRT=$(snippet postfix-main-virtual)
MASTER_PIPE=$(snippet postfix-master-pipe)
FORWARD=$(snippet forward)
for v in MAIN_LOCAL MAIN_VIRT MASTER_PIPE FORWARD; do
    [ -n "${!v}" ] || die "snippet for $v not found in $DOC"
done
echo "--- main.cf (from docs/mta-integration.md):"
printf '%s\n%s\n' "$MAIN_LOCAL" "$MAIN_VIRT"
echo "--- master.cf (from docs/mta-integration.md):"
printf '%s\n' "$MASTER_PIPE"
echo "--- .forward: $FORWARD"
echo "---"

# --- users and mailboxes ---------------------------------------------------------------------
mkuser() {
    id "$1" >/dev/null 2>&1 || useradd -m -s /usr/sbin/nologin "$1"
    local h
    h=$(getent passwd "$1" | cut -d: -f6)
    mountpoint -q "$h/Maildir" && umount "$h/Maildir"
    rm -rf "$h/Maildir" "$h/.forward" "$h/.config"
}
for u in cursus-t1 cursus-t2 cursus-t75 cursus-tfull cursus-t77 cursus-tb; do mkuser "$u"; done
id "$VUSER" >/dev/null 2>&1 || useradd -r -M -d "$VROOT" -s /usr/sbin/nologin "$VUSER"
rm -rf "$VROOT"
install -d -m 0700 -o "$VUSER" -g "$(id -gn "$VUSER")" "$VROOT"

as_user_maildir() { # USER DIR: an empty Maildir owned by USER
    install -d -m 0700 -o "$1" -g "$(id -gn "$1")" "$2" "$2/tmp" "$2/new" "$2/cur"
}
# C: .forward
printf '%s\n' "$FORWARD" > /home/cursus-t2/.forward
chown cursus-t2: /home/cursus-t2/.forward
chmod 0644 /home/cursus-t2/.forward
# 75 probes: new/ not writable (the message is written in new/ or, without O_TMPFILE, in tmp/); a full filesystem
as_user_maildir cursus-t75 /home/cursus-t75/Maildir
chmod 0500 /home/cursus-t75/Maildir/new /home/cursus-t75/Maildir/tmp
install -d -m 0700 -o cursus-tfull -g cursus-tfull /home/cursus-tfull/Maildir
mount -t tmpfs -o size=32k,mode=0700,uid="$(id -u cursus-tfull)",gid="$(id -g cursus-tfull)" \
    cursus-test-full /home/cursus-tfull/Maildir
as_user_maildir cursus-tfull /home/cursus-tfull/Maildir
as_user_maildir "$VUSER" "$VROOT/$DOMAIN/v75/Maildir"
chmod 0500 "$VROOT/$DOMAIN/v75/Maildir/new" "$VROOT/$DOMAIN/v75/Maildir/tmp"
chown "$VUSER:" "$VROOT/$DOMAIN"
# 77 probes: Maildir++ quota of 1000 bytes
for d in /home/cursus-t77/Maildir:cursus-t77 "$VROOT/$DOMAIN/v77/Maildir:$VUSER"; do
    as_user_maildir "${d#*:}" "${d%:*}"
    printf '1000S\n0 0\n' > "${d%:*}/maildirsize"
    chown "${d#*:}:" "${d%:*}/maildirsize"
    chmod 0600 "${d%:*}/maildirsize"
done

# --- Postfix: loopback only, like ../shared/tools/peer-bench/postfix-setup.sh ---------------
mkdir -p "$STATE"
cp -p /etc/postfix/main.cf /etc/postfix/master.cf "$STATE/"
postconf -e \
    'myhostname = localhost.localdomain' 'myorigin = $myhostname' \
    'mydestination = localhost, localhost.localdomain' \
    'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mynetworks = 127.0.0.0/8' \
    'smtp_dns_support_level = disabled' 'smtpd_peername_lookup = no' \
    'home_mailbox =' 'biff = no' 'mailbox_size_limit = 51200000' \
    'smtpd_tls_security_level = none' "maillog_file = $LOG" \
    'default_transport = error' 'relay_transport = error' \
    'alias_maps = hash:/etc/aliases' 'alias_database = hash:/etc/aliases'
while IFS= read -r line; do
    case $line in '' | '#'*) continue ;; esac
    postconf -e "$line"
done <<EOF
$MAIN_LOCAL
$MAIN_VIRT
EOF
postconf -M# smtp/inet
postconf -M "127.0.0.1:$PORT/inet = 127.0.0.1:$PORT inet n - n - - smtpd"
printf '%s\n' "$MASTER_PIPE" >> /etc/postfix/master.cf
postconf -F '*/*/chroot = n'
newaliases
postfix check || die "postfix check failed"
echo "postconf: mailbox_command = $(postconf -h mailbox_command)"
postconf -M cursus/unix | sed 's/^/postconf: /'

touch "$LOG"
LOGSTART=$(stat -c %s "$LOG")
newlog() { tail -c +$((LOGSTART + 1)) "$LOG"; }

postfix start >/dev/null 2>&1 || die "postfix start failed"
STARTED=1
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
done
(exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || die "Postfix does not listen on 127.0.0.1:$PORT"

# --- helpers ---------------------------------------------------------------------------------
# wait_log ERE: print the first new log line matching ERE, polling up to 30 s
wait_log() {
    local line
    for _ in $(seq 150); do
        line=$(newlog | grep -E -m1 -e "$1" || true)
        if [ -n "$line" ]; then printf '%s\n' "$line"; return 0; fi
        sleep 0.2
    done
    return 1
}
# qid MESSAGE-ID: the queue id cleanup(8) gave the message
qid() {
    wait_log "cleanup\[[0-9]+\]: [0-9A-Za-z]+: message-id=<$(ere "$1")>" |
        sed -E 's/.*: ([0-9A-Za-z]+): message-id=.*/\1/'
}
# outcome QID ADDRESS: the delivery log line for that queue id and recipient
outcome() { wait_log " $1: to=<$(ere "$2")>.*status=(sent|deferred|bounced|expired)"; }
ere() { printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|/]/\\&/g'; }

# gen NAME SIZE-KB: a test message with 8-bit text, a body line "From ...", a leading dot,
# trailing white space, a long line; Message-ID <NAME.$$@cursus.test>
n_msg=0
gen() {
    python3 - "$WORK/$1.eml" "$1.$$@cursus.test" "$2" <<'EOF'
import sys
path, mid, kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
head = (f"From: Alice Example <alice@example.org>\n"
        f"To: test recipient <rcpt@cursus.test>\n"
        f"Subject: cursus interop {mid}\n"
        f"Date: Mon, 01 Jan 2024 12:00:00 +0000\n"
        f"Message-ID: <{mid}>\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n").encode()
body = ("Grüße aus Köln – ½ € ☃\n"
        "From the start of a line, unquoted\n"
        ">From already quoted\n"
        ".a line with a leading dot\n"
        "trailing blanks   \n"
        "\ttab indented\n\n").encode()
body += b"x" * 900 + b"\n"
i = 0
while len(body) < kb * 1024:
    body += f"line {i:07d} ".encode() + "äöü ".encode() * 15 + b"\n"
    i += 1
body += b"-- \nend\n"
open(path, "wb").write(head + body)
EOF
    n_msg=$((n_msg + 1))
}
mid() { echo "$1.$$@cursus.test"; }

submit_sendmail() { # NAME FROM TO
    /usr/sbin/sendmail -i -f "$2" -- "$3" < "$WORK/$1.eml"
}
submit_smtp() { # NAME FROM TO ("" = null sender)
    # swaks ends DATA with "\n." after the text: give it the message without its last newline
    head -c -1 "$WORK/$1.eml" > "$WORK/$1.smtp"
    swaks --silent 2 --timeout 30 --server 127.0.0.1 --port "$PORT" --helo cursus.test \
        --from "${2:-<>}" --to "$3" --data "$WORK/$1.smtp" >"$WORK/$1.swaks" 2>&1
}

# expect_delivered NAME ADDRESS MAILDIR RETURN-PATH [DELIVERED-TO]: log status=sent, message
# once in MAILDIR, body identical, headers in order, Return-Path and Delivered-To once
expect_delivered() {
    local name=$1 addr=$2 md=$3 rp=$4 dt=${5:-$2} q line out
    if ! q=$(qid "$(mid "$name")"); then bad "$name: no queue id in $LOG"; return; fi
    if ! line=$(outcome "$q" "$addr"); then bad "$name: no delivery status for $addr within 30 s"; return; fi
    case $line in
        *status=sent*) ;;
        *) bad "$name: $addr not delivered: ${line#*: to=}"; return ;;
    esac
    if out=$(python3 "$CHECK" "$md" "$(mid "$name")" --expect "$WORK/$name.eml" \
        --return-path "$rp" --delivered-to "$dt" 2>&1); then
        ok "$name: $addr delivered intact to $md (${line##*status=})"
    else
        bad "$name: $addr: $out"
    fi
}
# expect_status NAME ADDRESS STATUS DSN-PREFIX: e.g. deferred 4. / bounced 5.2.2
expect_status() {
    local name=$1 addr=$2 st=$3 dsn=$4 q line
    if ! q=$(qid "$(mid "$name")"); then bad "$name: no queue id in $LOG"; return; fi
    if ! line=$(outcome "$q" "$addr"); then bad "$name: no delivery status for $addr within 30 s"; return; fi
    case $line in
        *"dsn=$dsn"*"status=$st"*) ok "$name: $addr $st (${line#*dsn=})" ;;
        *) bad "$name: $addr: want status=$st dsn=$dsn*, got: ${line#*: to=}" ;;
    esac
    eval "QID_$name=\$q"
}

S=alice@example.org
B=cursus-tb@localhost # sender of the probes: receives their bounces

# --- A: local(8) mailbox_command -------------------------------------------------------------
echo "== A: local(8) mailbox_command"
gen a_sendmail 3; submit_sendmail a_sendmail "$S" cursus-t1@localhost
gen a_smtp 3; submit_smtp a_smtp "$S" cursus-t1@localhost || bad "a_smtp: swaks: $(tail -3 "$WORK/a_smtp.swaks")"
gen a_ext 2; submit_smtp a_ext "$S" cursus-t1+lists.rust@localhost || bad "a_ext: swaks failed"
gen a_big 600; submit_sendmail a_big "$S" cursus-t1@localhost
expect_delivered a_sendmail cursus-t1@localhost /home/cursus-t1/Maildir "<$S>"
expect_delivered a_smtp cursus-t1@localhost /home/cursus-t1/Maildir "<$S>"
expect_delivered a_big cursus-t1@localhost /home/cursus-t1/Maildir "<$S>"
expect_delivered a_ext cursus-t1+lists.rust@localhost /home/cursus-t1/Maildir/.lists.rust "<$S>"
if [ -f /home/cursus-t1/Maildir/.lists.rust/maildirfolder ]; then
    ok "a_ext: -m \"\$EXTENSION\" created Maildir++ folder .lists.rust with maildirfolder"
else
    bad "a_ext: /home/cursus-t1/Maildir/.lists.rust/maildirfolder missing"
fi
if out=$(python3 "$CHECK" /home/cursus-t1/Maildir "$(mid a_sendmail)" --once x-original-to 2>&1); then
    ok "a_sendmail: X-Original-To (prepended by local(8)) present once"
else
    bad "a_sendmail: $out"
fi

# --- C: .forward -----------------------------------------------------------------------------
echo "== C: .forward $FORWARD"
gen c_forward 3; submit_sendmail c_forward "$S" cursus-t2@localhost
expect_delivered c_forward cursus-t2@localhost /home/cursus-t2/Maildir "<$S>"

# --- B: pipe(8) transport --------------------------------------------------------------------
echo "== B: pipe(8) transport 'cursus' for $DOMAIN"
gen b_sendmail 3; submit_sendmail b_sendmail "$S" "v1@$DOMAIN"
gen b_smtp 3; submit_smtp b_smtp "$S" "v1@$DOMAIN" || bad "b_smtp: swaks failed: $(tail -3 "$WORK/b_smtp.swaks")"
gen b_ext 2; submit_smtp b_ext "$S" "v1+lists.rust@$DOMAIN" || bad "b_ext: swaks failed"
gen b_null 2; submit_smtp b_null "" "v1@$DOMAIN" || bad "b_null: swaks failed: $(tail -3 "$WORK/b_null.swaks")"
expect_delivered b_sendmail "v1@$DOMAIN" "$VROOT/$DOMAIN/v1/Maildir" "<$S>"
expect_delivered b_smtp "v1@$DOMAIN" "$VROOT/$DOMAIN/v1/Maildir" "<$S>"
expect_delivered b_ext "v1+lists.rust@$DOMAIN" "$VROOT/$DOMAIN/v1/Maildir/.lists.rust" "<$S>"
expect_delivered b_null "v1@$DOMAIN" "$VROOT/$DOMAIN/v1/Maildir" "<>"

# --- probes: exit 75 must defer, exit 77 must bounce ----------------------------------------
echo "== probes"
gen p_ro 2; submit_sendmail p_ro "$B" cursus-t75@localhost
gen p_full 200; submit_sendmail p_full "$B" cursus-tfull@localhost
gen p_quota 3; submit_sendmail p_quota "$B" cursus-t77@localhost
gen pv_ro 2; submit_sendmail pv_ro "$B" "v75@$DOMAIN"
gen pv_quota 3; submit_sendmail pv_quota "$B" "v77@$DOMAIN"
expect_status p_ro cursus-t75@localhost deferred 4.
expect_status p_full cursus-tfull@localhost deferred 4.3.1
expect_status pv_ro "v75@$DOMAIN" deferred 4.
expect_status p_quota cursus-t77@localhost bounced 5.2.2
expect_status pv_quota "v77@$DOMAIN" bounced 5.2.2

# deferred messages stay in the queue
queue=$(postqueue -p 2>&1 || true)
for a in cursus-t75@localhost cursus-tfull@localhost "v75@$DOMAIN"; do
    if printf '%s\n' "$queue" | grep -q -F "$a"; then
        ok "postqueue -p lists the deferred message for $a"
    else
        bad "postqueue -p does not list $a"
    fi
done
# nothing half-delivered by the failed deliveries
for md in /home/cursus-t75/Maildir /home/cursus-tfull/Maildir "$VROOT/$DOMAIN/v75/Maildir" \
    /home/cursus-t77/Maildir "$VROOT/$DOMAIN/v77/Maildir"; do
    n=$(find "$md/new" "$md/cur" "$md/tmp" -type f | wc -l)
    if [ "$n" -eq 0 ]; then ok "no file left in $md/{new,cur,tmp}"; else bad "$n file(s) left in $md"; fi
done
# the quota bounces (null sender) are delivered to the sender by cursus-deliver itself
for name in p_quota pv_quota; do
    q=$(eval "echo \${QID_$name:-}")
    [ -n "$q" ] || continue
    if bq=$(wait_log "postfix/bounce\[[0-9]+\]: $q: sender non-delivery notification: " |
        sed -E 's/.*notification: ([0-9A-Za-z]+).*/\1/') &&
        line=$(outcome "$bq" "$B") && case $line in *status=sent*) true ;; *) false ;; esac; then
        if out=$(python3 "$CHECK" /home/cursus-tb/Maildir "$(mid $name)" \
            --return-path "<>" --delivered-to "$B" 2>&1); then
            ok "$name: bounce from MAILER-DAEMON (null sender) delivered to $B, Return-Path <> once"
        else
            bad "$name: bounce: $out"
        fi
        if grep -rqs '5\.2\.2' /home/cursus-tb/Maildir/new; then
            ok "$name: the bounce carries cursus-deliver's 5.2.2 text"
        else
            bad "$name: bounce does not mention 5.2.2"
        fi
    else
        bad "$name: no bounce delivered to $B within 30 s"
    fi
done

# --- independent reader over every mailbox that received mail -------------------------------
for spec in /home/cursus-t1/Maildir:3 /home/cursus-t1/Maildir/.lists.rust:1 \
    /home/cursus-t2/Maildir:1 "$VROOT/$DOMAIN/v1/Maildir:3" "$VROOT/$DOMAIN/v1/Maildir/.lists.rust:1" \
    /home/cursus-tb/Maildir:2; do
    if out=$(python3 "$VALIDATE" "${spec%:*}" "${spec##*:}" 2>&1); then
        ok "validate_maildir.py: $out"
    else
        bad "validate_maildir.py: $out"
    fi
done
# ownership: mail belongs to the recipient (A) or to the vmail user (B), never root
bad_owner=$(find /home/cursus-t1/Maildir "$VROOT/$DOMAIN/v1" \( -user root -o -group root \) -print | head -3)
if [ -z "$bad_owner" ]; then ok "no root-owned file in the delivered mailboxes"; else bad "root-owned: $bad_owner"; fi

if newlog | grep -E 'postfix/(local|pipe)\[' | grep -q 'status=sent (delivered to command:'; then
    ok "local(8) logged 'delivered to command' (mailbox_command)"
else
    bad "no 'delivered to command' line in $LOG"
fi
newlog | grep -E 'warning|fatal|panic' | grep -v 'dict_nis_init\|hostname' | head -5 | sed 's/^/log: /' || true

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
