# A realistic personal filter: 50 rules, the kind users keep in ~/.dovecot.sieve.
# Used by bench/sieve-bench.sh against ../shared/tools/peer-bench/msg-2k.eml: that
# message passes the first 47 rules and is filed by rule 48, so nearly every test runs.
require ["fileinto", "envelope", "subaddress", "variables", "copy"];

# --- 1-3: spam, as marked by the spam filter upstream ------------------------------------
if header :is "x-spam-flag" "YES" { fileinto "Junk"; stop; }
if header :matches "x-spam-status" "Yes,*" { fileinto "Junk"; stop; }
if header :contains "x-spam-level" "*****" { fileinto "Junk"; stop; }

# --- 4-23: mailing lists by List-Id -------------------------------------------------------
if header :contains "list-id" "<rust-users.lists.example.org>" { fileinto "Lists.rust-users"; stop; }
if header :contains "list-id" "<rust-internals.lists.example.org>" { fileinto "Lists.rust-internals"; stop; }
if header :contains "list-id" "<dovecot.dovecot.org>" { fileinto "Lists.dovecot"; stop; }
if header :contains "list-id" "<postfix-users.postfix.org>" { fileinto "Lists.postfix"; stop; }
if header :contains "list-id" "<debian-devel.lists.debian.org>" { fileinto "Lists.debian-devel"; stop; }
if header :contains "list-id" "<debian-security-announce.lists.debian.org>" { fileinto "Lists.debian-security"; stop; }
if header :contains "list-id" "<linux-kernel.vger.kernel.org>" { fileinto "Lists.lkml"; stop; }
if header :contains "list-id" "<netdev.vger.kernel.org>" { fileinto "Lists.netdev"; stop; }
if header :contains "list-id" "<oss-security.lists.openwall.com>" { fileinto "Lists.oss-security"; stop; }
if header :contains "list-id" "<ietf.ietf.org>" { fileinto "Lists.ietf"; stop; }
if header :contains "list-id" "<extra.ietf.org>" { fileinto "Lists.extra"; stop; }
if header :contains "list-id" "<emailcore.ietf.org>" { fileinto "Lists.emailcore"; stop; }
if header :contains "list-id" "<mailop.mailop.org>" { fileinto "Lists.mailop"; stop; }
if header :contains "list-id" "<exim-users.exim.org>" { fileinto "Lists.exim"; stop; }
if header :contains "list-id" "<opensmtpd.opensmtpd.org>" { fileinto "Lists.opensmtpd"; stop; }
if header :contains "list-id" "<python-dev.python.org>" { fileinto "Lists.python-dev"; stop; }
if header :contains "list-id" "<golang-nuts.googlegroups.com>" { fileinto "Lists.golang"; stop; }
if header :contains "list-id" "<users.spamassassin.apache.org>" { fileinto "Lists.spamassassin"; stop; }
if header :contains "list-id" "<announce.example.org>" { fileinto "Lists.announce"; stop; }
if header :matches "list-id" "*<*.lists.example.net>*" {
    set :lower "list" "${2}";
    fileinto "Lists.${list}";
    stop;
}

# --- 24-29: subaddresses the user hands out -----------------------------------------------
if envelope :detail "to" "github" { fileinto "Services.GitHub"; stop; }
if envelope :detail "to" "shop" { fileinto "Shopping"; stop; }
if envelope :detail "to" ["travel", "flights", "hotels"] { fileinto "Travel"; stop; }
if envelope :detail "to" "bank" { fileinto "Finance"; stop; }
if envelope :detail :matches "to" "list-*" { fileinto "Lists.${1}"; stop; }
if address :detail "to" "newsletter" { fileinto "Newsletters"; stop; }

# --- 30-38: senders, by domain and local part ---------------------------------------------
if address :domain :is "from" ["bank.example", "card.example", "broker.example"] { fileinto "Finance"; stop; }
if address :domain :is "from" ["airline.example", "rail.example"] { fileinto "Travel"; stop; }
if address :domain :matches "from" "*.gov.example" { fileinto "Government"; stop; }
if address :localpart :is "from" ["noreply", "no-reply", "donotreply"] { fileinto "Notifications"; stop; }
if address :localpart :matches "from" "notifications*" { fileinto "Notifications"; stop; }
if address :all :is "from" ["mom@family.example", "dad@family.example"] { fileinto "Family"; stop; }
if address :domain :is ["to", "cc"] "team.example.org" { fileinto "Team"; stop; }
if address :localpart :is "from" ["mailer-daemon", "postmaster"] { fileinto "Bounces"; stop; }
if envelope :is "from" "" { fileinto "Bounces"; stop; }

# --- 39-46: subjects and other headers ----------------------------------------------------
if header :contains "subject" "[JIRA]" { fileinto "Work.Jira"; stop; }
if header :contains "subject" ["invoice", "receipt", "payment due"] { fileinto "Finance.Invoices"; stop; }
if header :contains "subject" ["your order", "has shipped", "delivery update"] { fileinto "Shopping"; stop; }
if header :matches "subject" "Re: [*] *" { fileinto "Lists.replies"; stop; }
if header :contains "precedence" ["bulk", "list", "junk"] { fileinto "Bulk"; stop; }
if header :is "auto-submitted" "auto-generated" { fileinto "Notifications"; stop; }
if exists "list-unsubscribe" { fileinto "Newsletters"; stop; }
if header :contains "x-mailer" ["MailChimp", "Sendinblue"] { fileinto "Newsletters"; stop; }

# --- 47-48: work mail, filed by the kind of message ---------------------------------------
if header :matches "subject" "* benchmark *" { set "kind" "${1}"; }
if address :domain :is "from" "example.com" {
    fileinto :copy "Archive";
    fileinto "Work.${kind}";
    stop;
}

# --- 49-50: whatever is left --------------------------------------------------------------
if size :over 5M { fileinto "Large"; stop; }
if not exists "date" { fileinto "Junk"; stop; }
