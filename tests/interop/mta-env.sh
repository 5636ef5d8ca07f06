#!/bin/bash
# Interop test without the MTA: runs the OpenSMTPD, Exim and sendmail snippets of
# docs/mta-integration.md exactly the way those MTAs run an MDA, as recorded on Debian 12
# (../shared/reference/mda-env-observed.md): the same shell or no shell, the same replaced
# environment, the same standard-input prefix (Return-Path / Return-path / Delivered-To /
# Envelope-to / From_ line), the same working directory. Debian lets only one MTA be
# installed at a time (Postfix is tested for real by postfix.sh), so this is how the other
# snippets are checked.
#
#   usage: bash tests/interop/mta-env.sh [path/to/cursus-deliver]
#
# Runs as any user. As root, the deliveries run as the test user cursus-tenv (as the MTA
# would) and the sendmail snippet (which needs root: flag S) is run too; otherwise that part
# is reported as skipped.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/release/cursus-deliver}
DOC=$ROOT/docs/mta-integration.md
CHECK=$ROOT/tests/interop/check_message.py

pass=0
fail=0
skip=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
die() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

[ -x "$BIN" ] || die "cursus-deliver binary not found at $BIN"
FULL=$(dirname "$BIN")/cursus-deliver-full
[ -x "$FULL" ] || die "cursus-deliver-full not found at $FULL (it is installed beside cursus-deliver)"
command -v python3 >/dev/null || die "python3 missing"

W=$(mktemp -d /tmp/cursus-mta-env.XXXXXX)
chmod 0755 "$W"
trap 'rm -rf "$W"' EXIT
install -m 0755 "$BIN" "$W/cursus-deliver"
install -m 0755 "$FULL" "$W/cursus-deliver-full"

if [ "$(id -u)" -eq 0 ]; then
    U=cursus-tenv
    id "$U" >/dev/null 2>&1 || useradd -m -s /bin/sh "$U"
    H=$(getent passwd "$U" | cut -d: -f6)
    rm -rf "$H/Maildir" "$H/.config"
    run_as() { setpriv --reuid="$U" --regid="$(id -g "$U")" --clear-groups "$@"; }
else
    U=$(id -un)
    H=$W/home
    mkdir -p "$H"
    run_as() { "$@"; }
fi
MD=$H/Maildir

snippet() {
    awk -v n="$1" '
        $0 == "<!-- cursus-test: " n " -->" { f = 1; next }
        f == 1 && /^```/ { f = 2; next }
        f == 2 && /^```/ { exit }
        f == 2 { print }' "$DOC" | sed -e "s#/usr/lib/cursus/cursus-deliver#$W/cursus-deliver#g"
}

# message NAME: the message as the MTA received it (LF line ends), Message-ID <NAME.$$@env.test>
message() {
    printf 'Received: from client (127.0.0.1) by mx.test; Mon, 1 Jan 2024 12:00:00 +0000\nFrom: Alice <alice@example.org>\nTo: %s\nSubject: %s\nMessage-ID: <%s.%s@env.test>\n\nbody of %s\nFrom here on, a line an mbox writer would quote\n\xc3\xa4 8-bit\n' \
        "$U@localhost" "$1" "$1" "$$" "$1" > "$W/$1.eml"
}
mid() { echo "$1.$$@env.test"; }

# check NAME MAILDIR RETURN-PATH DELIVERED-TO: ran with exit 0, stored once, intact
check() {
    local name=$1 rc out
    rc=$(cat "$W/$name.rc")
    if [ "$rc" -ne 0 ]; then
        bad "$name: exit $rc: $(cat "$W/$name.out")"
        return
    fi
    if out=$(python3 "$CHECK" "$2" "$(mid "$name")" --expect "$W/$name.eml" \
        --return-path "$3" --delivered-to "$4" 2>&1); then
        ok "$name: delivered to $2, Return-Path $3 and Delivered-To $4 once"
    else
        bad "$name: $out"
    fi
}

# --- OpenSMTPD 6.8: /bin/sh -c "<mda with %{..} expanded>", environment replaced --------------
OSMTPD=$(snippet opensmtpd)
MDA=$(printf '%s\n' "$OSMTPD" | sed -n 's/^action "[^"]*" mda "\(.*\)"$/\1/p')
[ -n "$MDA" ] || die "no 'action ... mda \"...\"' line in the opensmtpd snippet"
echo "== OpenSMTPD: mda \"$MDA\""
# opensmtpd NAME SENDER RCPT-LOCAL [EXTENSION]
opensmtpd() {
    local name=$1 sender=$2 local=$3 ext=${4-} rcpt cmd prefix=""
    rcpt="$local@localhost"
    cmd=$(python3 - "$MDA" "$sender" "$rcpt" "$U" "$H" <<'EOF'
import re, sys
mda, sender, rcpt, user, home = sys.argv[1:]
ESC = set("!#$%&'*/?^`{|}~")           # MAILADDR_ESCAPE, replaced by ':' unless :raw
def san(v): return "".join(":" if c in ESC else c for c in v)
su, _, sd = sender.rpartition("@") if sender else ("", "", "")
ru, _, rd = rcpt.rpartition("@")
vals = {"sender": sender, "sender.user": su, "sender.domain": sd,
        "rcpt": rcpt, "rcpt.user": ru, "rcpt.domain": rd,
        "dest": rcpt, "dest.user": ru, "dest.domain": rd,
        "user.username": user, "mbox.from": sender or "MAILER-DAEMON"}
def rep(m):
    k = m.group(1)
    if k == "user.directory": return home
    return san(vals[k])
print(re.sub(r"%\{([a-z.]+)\}", rep, mda.replace("%%", "\0")).replace("\0", "%"))
EOF
)
    [ -n "$sender" ] && prefix="Return-Path: <$sender>"$'\n'
    prefix="${prefix}Delivered-To: $rcpt"$'\n'
    { printf '%s' "$prefix"; cat "$W/$name.eml"; } > "$W/$name.in"
    local envs=(USER="$U" HOME="$H" DOMAIN=localhost LOGNAME="$U" LOCAL="$local"
        PATH=/bin:/usr/bin SENDER="$sender" SHELL=/bin/sh RECIPIENT="$rcpt")
    [ -n "$ext" ] && envs+=(EXTENSION="$ext")
    (cd "$H" && umask 022 && run_as env -i "${envs[@]}" /bin/sh -c "$cmd" \
        <"$W/$name.in" >"$W/$name.out" 2>&1) && echo 0 >"$W/$name.rc" || echo $? >"$W/$name.rc"
}
message osmtpd_plain; opensmtpd osmtpd_plain alice@example.org "$U"
check osmtpd_plain "$MD" "<alice@example.org>" "$U@localhost"
message osmtpd_bounce; opensmtpd osmtpd_bounce "" "$U"
check osmtpd_bounce "$MD" "<>" "$U@localhost"
message osmtpd_ext; opensmtpd osmtpd_ext alice@example.org "$U+news" news
check osmtpd_ext "$MD" "<alice@example.org>" "$U+news@localhost"
# a hostile local part: OpenSMTPD turns ' into ':' inside %{rcpt}, the shell sees one word
message osmtpd_hostile; opensmtpd osmtpd_hostile alice@example.org "$U'\$(touch\${IFS}$W/pwned)'"
if [ -e "$W/pwned" ]; then
    bad "osmtpd_hostile: the mda string let a recipient address run a command"
else
    ok "osmtpd_hostile: recipient address with quotes and \$(...) ran no command (exit $(cat "$W/osmtpd_hostile.rc"))"
fi

# --- Exim 4.96 pipe transport: argv split by Exim, no shell, environment replaced -------------
EXIM=$(snippet exim)
COMMAND=$(printf '%s\n' "$EXIM" | sed -n 's/^ *command *= *//p')
[ -n "$COMMAND" ] || die "no 'command =' in the exim snippet"
echo "== Exim: command = $COMMAND"
has_opt() { printf '%s\n' "$EXIM" | grep -Eq "^ *$1 *(\$|=)"; }
case $COMMAND in *'$sender_address'* | *'$local_part '* | *'$local_part_suffix'* | *'$domain'*)
    bad "exim snippet passes a tainted variable in command (Exim 4.94+ refuses it)" ;;
esac
# exim NAME SENDER SUFFIX
exim() {
    local name=$1 sender=$2 suffix=$3 rcpt prefix="" argv
    rcpt="$U$suffix@localhost"
    # Exim's defaults: message_prefix "From sender date" and message_suffix "\n" unless emptied
    if ! printf '%s\n' "$EXIM" | grep -Eq '^ *message_prefix *= *$'; then
        prefix="From ${sender:-MAILER-DAEMON} $(LC_ALL=C date '+%a %b %e %T %Y')"$'\n'
    fi
    has_opt return_path_add && prefix="${prefix}Return-path: <$sender>"$'\n'
    has_opt envelope_to_add && prefix="${prefix}Envelope-to: $rcpt"$'\n'
    has_opt delivery_date_add && prefix="${prefix}Delivery-date: $(LC_ALL=C date -R)"$'\n'
    { printf '%s' "$prefix"; cat "$W/$name.eml"
      printf '%s\n' "$EXIM" | grep -Eq '^ *message_suffix *= *$' || printf '\n'; } > "$W/$name.in"
    read -r -a argv <<<"${COMMAND//\$local_part_data/$U}"
    (cd "$H" && umask 022 && run_as env -i LOCAL_PART="$U" LOGNAME="$U" USER="$U" \
        LOCAL_PART_PREFIX= LOCAL_PART_SUFFIX="$suffix" DOMAIN=localhost HOME="$H" \
        MESSAGE_ID=1xV3Qd-0002An-14 PATH=/bin:/usr/bin RECIPIENT="$rcpt" \
        QUALIFY_DOMAIN=localhost SENDER="$sender" SHELL=/bin/sh "${argv[@]}" \
        <"$W/$name.in" >"$W/$name.out" 2>&1) && echo 0 >"$W/$name.rc" || echo $? >"$W/$name.rc"
}
message exim_plain; exim exim_plain alice@example.org ""
check exim_plain "$MD" "<alice@example.org>" "$U@localhost"
message exim_bounce; exim exim_bounce "" ""
check exim_bounce "$MD" "<>" "$U@localhost"
message exim_suffix; exim exim_suffix alice@example.org "+lists"
check exim_suffix "$MD" "<alice@example.org>" "$U+lists@localhost"

# --- extension_folders = true (user file): +ext goes into an existing folder ------------------
EXTCONF=$(snippet extension-folders)
[ -n "$EXTCONF" ] || die "no extension-folders snippet"
echo "== ~/.config/cursus/deliver.toml: $EXTCONF"
run_as mkdir -p "$H/.config/cursus" "$MD/.lists/new" "$MD/.lists/cur" "$MD/.lists/tmp"
run_as touch "$MD/.lists/maildirfolder"
printf '%s\n' "$EXTCONF" | run_as tee "$H/.config/cursus/deliver.toml" >/dev/null
message exim_folder; exim exim_folder alice@example.org "+lists"
check exim_folder "$MD/.lists" "<alice@example.org>" "$U+lists@localhost"
message osmtpd_folder; opensmtpd osmtpd_folder alice@example.org "$U+lists" lists
check osmtpd_folder "$MD/.lists" "<alice@example.org>" "$U+lists@localhost"
message osmtpd_nofolder; opensmtpd osmtpd_nofolder alice@example.org "$U+nosuch" nosuch
check osmtpd_nofolder "$MD" "<alice@example.org>" "$U+nosuch@localhost"
if [ ! -e "$MD/.nosuch" ]; then ok "osmtpd_nofolder: no folder created for an unknown extension"; else bad "folder .nosuch was created"; fi
run_as rm -f "$H/.config/cursus/deliver.toml"

# --- sendmail FEATURE(local_procmail): started as root (flag S), argv from A= ---------------
SM=$(snippet sendmail)
echo "== sendmail: $(printf '%s\n' "$SM" | head -1)"
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: sendmail snippet (the local mailer with flag S runs as root; run this test as root)"
    skip=$((skip + 1))
else
    read -r SM_PATH SM_ARGV SM_FLAGS < <(python3 - "$SM" <<'EOF'
import re, sys
m = re.search(r"FEATURE\(`local_procmail',\s*`([^']*)',\s*`([^']*)',\s*`([^']*)'\)", sys.argv[1])
print(m.group(1), m.group(2).replace(" ", "\x1f"), m.group(3)) if m else print("", "", "")
EOF
)
    [ -n "$SM_PATH" ] || die "no FEATURE(local_procmail, ...) in the sendmail snippet"
    # sendmail_local NAME SENDER: $g = sender ("<>" for a bounce), $u = user
    sendmail_local() {
        local name=$1 sender=$2 prefix="" argv a
        case $SM_FLAGS in *n*) ;; *) prefix="From ${sender:-MAILER-DAEMON}  $(LC_ALL=C date '+%a %b %e %T %Y')"$'\n' ;; esac
        case $SM_FLAGS in *P*) prefix="${prefix}Return-Path: <$sender>"$'\n' ;; esac
        { printf '%s' "$prefix"; cat "$W/$name.eml"; } > "$W/$name.in"
        argv=()
        IFS=$'\x1f' read -r -a words <<<"$SM_ARGV"
        for a in "${words[@]:1}"; do
            a=${a//\$g/${sender:-<>}}
            a=${a//\$u/$U}
            argv+=("$a")
        done
        (cd /var/tmp && env -i PATH=/usr/bin:/bin "$SM_PATH" "${argv[@]}" \
            <"$W/$name.in" >"$W/$name.out" 2>&1) && echo 0 >"$W/$name.rc" || echo $? >"$W/$name.rc"
    }
    message sendmail_plain; sendmail_local sendmail_plain alice@example.org
    check sendmail_plain "$MD" "<alice@example.org>" "$U@$(hostname)"
    message sendmail_bounce; sendmail_local sendmail_bounce ""
    check sendmail_bounce "$MD" "<>" "$U@$(hostname)"
    owner=$(find "$MD" -type f -user root | head -1)
    [ -z "$owner" ] && ok "sendmail: started as root, no file in $MD belongs to root" || bad "root-owned file: $owner"
fi

if out=$(python3 "$ROOT/../shared/tools/validate_maildir.py" "$MD" 2>&1); then ok "$out"; else bad "$out"; fi

if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
