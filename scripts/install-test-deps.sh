#!/bin/bash
# Installs the Debian 12 packages the Cursus test suite and benchmark need:
#   postfix swaks dovecot-core dovecot-imapd dovecot-sieve maildrop procmail  (peer MTA/MDAs,
#       via ../shared/tools/peer-bench/install-peers.sh, which keeps daemons from starting)
#   python3 (validators), strace (what each MDA fsyncs), time (/usr/bin/time -v: peak RSS),
#   util-linux (mount, for the tmpfs fault tests), passwd (useradd)
#   dovecot-lmtpd (Dovecot's LMTP, a peer of the lmtp transport)
#   dnsmasq-base (the test DNS server of tests/outbound: MX, A, AAAA, null MX on 127.0.0.1)
# Needs root; without root it prints a note and exits 0 (the root-only tests skip themselves).
# Idempotent: re-running it with everything present does not touch apt.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: not root, skipping package installation"
    exit 0
fi

top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))
peers="$top/../shared/tools/peer-bench/install-peers.sh"

extra="python3 strace time util-linux passwd dnsmasq-base dovecot-lmtpd"
need=""
for p in postfix swaks dovecot-core dovecot-imapd dovecot-sieve maildrop procmail $extra; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
done
# cursusd started as root becomes this user (its tests run it so, as an installation would).
id cursus >/dev/null 2>&1 ||
    useradd --system --home-dir /var/spool/cursus --no-create-home --shell /usr/sbin/nologin cursus
if [ -z "$need" ]; then
    echo "install-test-deps: all packages present"
    exit 0
fi
echo "install-test-deps: installing:$need"

# Purging postfix deletes main.cf/master.cf; an install over an existing one keeps them.
if [ -f "$peers" ]; then
    # install-peers.sh only runs apt-get update when there are no lists at all; stale lists
    # give 404s, so update and try once more.
    sh "$peers" $extra || { apt-get update -qq && sh "$peers" $extra; }
else
    echo "install-test-deps: $peers not found, installing directly"
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string localhost.localdomain" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postfix swaks dovecot-core dovecot-imapd dovecot-sieve maildrop procmail $extra >/dev/null
fi
# The packages must not leave daemons behind (policy-rc.d forbids starting them, but be sure).
if command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi
echo "install-test-deps: done"
