//! The documented parameters of cursus.toml, one table for the cursus.toml(5) man page: the
//! page is rendered from this table by [`manual`] and checked in CI
//! (crates/daemon/tests/manpage.rs); every daemon parameter's example value is parsed
//! by the real parser in a test, and every key the parsers accept (as they list them when
//! they refuse an unknown one) has a row here, so the page and the code cannot drift.
//!
//! Pure data and text; no I/O.

/// One parameter: its table (`""` for the top level), key, example value (TOML), default,
/// and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    pub section: &'static str,
    pub key: &'static str,
    pub example: &'static str,
    pub default: &'static str,
    pub text: &'static str,
}

const fn p(
    section: &'static str,
    key: &'static str,
    example: &'static str,
    default: &'static str,
    text: &'static str,
) -> Parameter {
    Parameter {
        section,
        key,
        example,
        default,
        text,
    }
}

/// The daemon's own parameters (read by crates/daemon/src/config.rs).
pub const DAEMON: &[Parameter] = &[
    p(
        "",
        "hostname",
        "\"mx.example.org\"",
        "the system host name",
        "The name in the greeting, the EHLO reply, Received fields and DSNs.",
    ),
    p(
        "",
        "data_dir",
        "\"/var/spool/cursus\"",
        "/var/spool/cursus as root, ~/.local/share/cursus otherwise",
        "The queue (queue/), the pid file, the submission socket and, in single-user mode, the mailboxes (mail/) and their table (mailboxes).",
    ),
    p(
        "",
        "user",
        "\"cursus\"",
        "cursus",
        "The user cursusd becomes after binding its ports, when started as root.",
    ),
    p(
        "",
        "queue_lifetime_days",
        "5",
        "5",
        "Days after which a message that could not be delivered is returned to its sender.",
    ),
    p(
        "smtp",
        "listen",
        "[\"0.0.0.0:25\", \"[::]:25\"]",
        "[\"127.0.0.1:2525\"]",
        "Addresses for SMTP: HOST:PORT or unix:/PATH.",
    ),
    p(
        "smtp",
        "max_connections",
        "10000",
        "10000",
        "Connections served at once; beyond, 421 4.7.0.",
    ),
    p(
        "smtp",
        "max_connections_per_client",
        "50",
        "50",
        "Connections from one client address; beyond, 421 4.7.0.",
    ),
    p(
        "smtp",
        "message_size",
        "26214400",
        "26214400",
        "Largest message in octets (SIZE; beyond, 552 5.3.4).",
    ),
    p(
        "smtp",
        "recipients",
        "100",
        "100",
        "Recipients per message; beyond, 452 4.5.3.",
    ),
    p(
        "smtp",
        "messages_per_connection",
        "1000",
        "1000",
        "Messages per connection; beyond, 421 4.7.0.",
    ),
    p(
        "smtp",
        "command_line",
        "1024",
        "1024",
        "Longest command line in octets (at least 512); longer, 500 5.5.2.",
    ),
    p(
        "smtp",
        "verify_local_recipients",
        "true",
        "true",
        "Refuse unknown local recipients at RCPT with 550 5.1.1 (routers with verify = true decide).",
    ),
    p(
        "smtp",
        "verify_remote_recipients",
        "false",
        "false",
        "Also verify recipients of domains that are not local_domains (relayed mail) at RCPT, with the routers marked verify = true: an address none of them accepts gets 550 5.1.1, a failed lookup 451 4.3.0. Off, such a recipient is accepted once the client may relay (loopback, the local socket) and a failure is reported by a bounce. Either way a domain no router can route is 550 5.4.4, and a client that may not relay gets 554 5.7.1.",
    ),
    p(
        "smtp",
        "greet_pause_ms",
        "0",
        "0",
        "Wait this long before the greeting; a client that talks first is refused (554 5.5.1). With 0, input already waiting when the greeting is about to be written is refused the same way.",
    ),
    p(
        "smtp",
        "queue_min_free",
        "10485760",
        "10485760 (10 MiB)",
        "Octets that must stay free on the queue's file system: MAIL (with its SIZE added), DATA and BDAT are answered 452 4.3.1 when less is free. The end of a message that does not fit gets 452 4.3.1 too. Also for LMTP and local submission.",
    ),
    p(
        "smtp",
        "initial_timeout",
        "300",
        "300",
        "Seconds to wait for HELO, EHLO or LHLO after the greeting (RFC 5321 4.5.3.2.1). Every timeout of [smtp] ends the connection with 421 4.4.2, and also bounds each write to a client that does not read (closed without a reply, and logged). They apply to LMTP and the local submission socket too.",
    ),
    p(
        "smtp",
        "mail_timeout",
        "300",
        "300",
        "Seconds to wait for MAIL (or another command outside a transaction), and to write the answer to MAIL (RFC 5321 4.5.3.2.2).",
    ),
    p(
        "smtp",
        "rcpt_timeout",
        "300",
        "300",
        "Seconds to wait for RCPT, DATA or BDAT within a transaction, and to write the answer to RCPT (RFC 5321 4.5.3.2.3).",
    ),
    p(
        "smtp",
        "data_init_timeout",
        "120",
        "120",
        "Seconds to write the answer to DATA (354 or a refusal) (RFC 5321 4.5.3.2.4).",
    ),
    p(
        "smtp",
        "data_block_timeout",
        "180",
        "180",
        "Seconds to wait for each part of the message content (DATA lines, a BDAT chunk) (RFC 5321 4.5.3.2.5).",
    ),
    p(
        "smtp",
        "data_done_timeout",
        "600",
        "600",
        "Seconds to write the final reply after the message (RFC 5321 4.5.3.2.6).",
    ),
    p(
        "lmtp",
        "listen",
        "[\"unix:/run/cursus/lmtp.sock\"]",
        "none",
        "Addresses for LMTP (RFC 2033), for Postfix or Exim handing mail to cursusd.",
    ),
    p(
        "lda",
        "socket",
        "\"/run/cursus/lda.sock\"",
        "none: started as root, cursusd starts cursus-lda itself",
        "The socket of a cursus-lda service running on its own (cursus-lda serve --peer cursus).",
    ),
    p(
        "lda",
        "connections",
        "8",
        "8",
        "Connections kept to cursus-lda for deliveries (deliveries in parallel). Routing has two more of its own for reading users' .forward files (read-forward), so that it never waits behind a delivery.",
    ),
    p(
        "lda",
        "policy",
        "\"/etc/cursus/lda-policy.toml\"",
        "cursus-lda's default",
        "The policy file of the cursus-lda that cursusd starts itself.",
    ),
    p(
        "submission",
        "socket",
        "\"/run/cursus/submit.sock\"",
        "DATA_DIR/submit.sock",
        "The local submission socket of cursus sendmail (mode 0666; the user is known by SO_PEERCRED).",
    ),
    p(
        "tls",
        "certificate",
        "\"/etc/cursus/cert.pem\"",
        "none (no STARTTLS)",
        "PEM certificate chain for STARTTLS; read again on SIGHUP.",
    ),
    p(
        "tls",
        "key",
        "\"/etc/cursus/key.pem\"",
        "none",
        "PEM private key of the certificate.",
    ),
    p(
        "outbound",
        "resolver",
        "\"127.0.0.1:53\"",
        "/etc/resolv.conf",
        "The DNS server for MX, A and AAAA lookups: IP or IP:PORT (UDP, then TCP).",
    ),
    p(
        "outbound",
        "helo_name",
        "\"mx.example.org\"",
        "hostname",
        "The name cursusd gives in EHLO/LHLO.",
    ),
    p(
        "outbound",
        "tls",
        "\"opportunistic\"",
        "opportunistic",
        "STARTTLS: never, opportunistic (when offered; an unverified certificate is used and logged as such) or required (no delivery without TLS, 4.7.10). The verdict (verified, or not verified and why) is in each delivery's log line (tls=).",
    ),
    p(
        "outbound",
        "tls_ca_file",
        "\"/etc/cursus/relay-ca.pem\"",
        "none (Mozilla's roots only)",
        "Extra trust anchors (PEM) for verifying servers' certificates.",
    ),
    p(
        "outbound",
        "eight_bit",
        "\"send\"",
        "send",
        "8-bit content to a server without 8BITMIME: send (as is, without BODY=8BITMIME, as most MTAs do) or refuse (permanent 5.6.3). Binary content without BINARYMIME is always 5.6.3; addresses or headers needing SMTPUTF8 to a server without it are 5.6.7.",
    ),
    p(
        "outbound",
        "chunking",
        "true",
        "true",
        "Send with BDAT when the server offers CHUNKING (else DATA with dot-stuffing).",
    ),
    p(
        "outbound",
        "connect_timeout",
        "30",
        "30",
        "Seconds to wait for a TCP connection (then the next address or host).",
    ),
    p(
        "outbound",
        "greeting_timeout",
        "300",
        "300",
        "Seconds to wait for the greeting and the EHLO, STARTTLS and AUTH replies (RFC 5321 4.5.3.2.1).",
    ),
    p(
        "outbound",
        "mail_timeout",
        "300",
        "300",
        "Seconds to wait for the reply to MAIL (RFC 5321 4.5.3.2.2).",
    ),
    p(
        "outbound",
        "rcpt_timeout",
        "300",
        "300",
        "Seconds to wait for the reply to RCPT (RFC 5321 4.5.3.2.3).",
    ),
    p(
        "outbound",
        "data_init_timeout",
        "120",
        "120",
        "Seconds to wait for 354 after DATA (RFC 5321 4.5.3.2.4).",
    ),
    p(
        "outbound",
        "data_block_timeout",
        "180",
        "180",
        "Seconds allowed for each write of the message (RFC 5321 4.5.3.2.5).",
    ),
    p(
        "outbound",
        "data_done_timeout",
        "600",
        "600",
        "Seconds to wait for the reply after the message (RFC 5321 4.5.3.2.6).",
    ),
    p(
        "outbound",
        "connections_per_destination",
        "20",
        "20",
        "Connections open at once to one destination (a domain's MX hosts, or a relay host list).",
    ),
    p(
        "outbound",
        "messages_per_connection",
        "1000",
        "1000",
        "Messages sent over one connection before it is closed.",
    ),
    p(
        "outbound",
        "idle_timeout",
        "5",
        "5",
        "Seconds an idle connection is kept for the next message to the same destination (checked with RSET after a second).",
    ),
    p(
        "outbound",
        "recipients_per_transaction",
        "100",
        "100",
        "Recipients in one transaction; more are sent in further transactions on the same connection.",
    ),
    p(
        "outbound",
        "auth",
        "[{ host = \"relay.example.net\", user = \"mx1\", password = \"s3cret\" }]",
        "none",
        "Smarthost credentials, one [[outbound.auth]] table per relay host named by a manualroute router or an smtp transport: host, user, password or password_file, without_tls (default false: AUTH PLAIN or LOGIN only after STARTTLS).",
    ),
    p(
        "bounce",
        "templates",
        "\"/etc/cursus/bounce\"",
        "the built-in texts",
        "A directory with failed.txt, delayed.txt and delivered.txt (each optional) replacing \
         the first, human part of non-delivery, delay and success notices. Plain text with \
         ${mta}, ${sender}, ${subject}, ${arrival}, ${queue_id}, ${count}, ${give_up} and \
         ${recipients} (each recipient with what happened, what to do and the technical \
         details); $$ is a dollar sign. Unknown variables are errors at start and in cursus \
         config check. The machine-readable report part is always added.",
    ),
    p(
        "bounce",
        "unknown_user_script",
        "\"/etc/cursus/unknown-user\"",
        "none",
        "A program run for each unknown local user (5.1.1 in a local domain) in a \
         non-delivery notice, with the address as its only argument, no shell, an empty \
         environment but PATH, for at most 10 s; its output (up to 4 KiB) replaces the \
         built-in explanation for that recipient (for example: who to write to instead).",
    ),
    p(
        "bounce",
        "delay_warnings",
        "[\"4h\", \"2d\"]",
        "[\"1d\"]",
        "Ages after arrival at which the sender of a message still deferred is told (once \
         per age, at the first attempt after it), unless NOTIFY excludes DELAY; [] sends \
         none. The notice says until when the mail system keeps trying.",
    ),
    p(
        "hints",
        "enabled",
        "true",
        "true",
        "Keep the hints database DATA_DIR/hints.db (SQLite, WAL): what past deliveries learnt about hosts, domains and addresses. It is a cache: a damaged file is moved aside to hints.db.bad and recreated, an error turns the hints off until the next tidy run, and deleting it loses no mail. cursus retry test shows the hints that apply to an address.",
    ),
    p(
        "hints",
        "tidy_interval",
        "\"1h\"",
        "1h",
        "How often old rows are removed (at least 1m). Durations: 30s, 15m, 2h, 4d, 1w, or sums like 1h30m; 0 turns a behaviour below off.",
    ),
    p(
        "hints",
        "keep",
        "\"30d\"",
        "30d",
        "Rows not updated for this long are removed, and messages listed as waiting for a destination this long are dropped from the list.",
    ),
    p(
        "hints",
        "no_mx_refused_lifetime",
        "\"2h\"",
        "2h",
        "A domain without MX records (delivered to its A/AAAA records) whose every connection was refused since the message's first attempt: the message bounces (5.4.7) at its first refused attempt after this age, not at the retry rule's lifetime.",
    ),
    p(
        "hints",
        "timeout_bounce_memory",
        "\"1d\"",
        "1d",
        "When a recipient bounces because its retry rule gave up on a timeout, later messages to the same address bounce (5.4.7) at their first timeout or refused connection, for this long or until a delivery there succeeds; other failures follow the rules.",
    ),
    p(
        "hints",
        "start_waiting",
        "true",
        "true",
        "Messages deferred because their destination (the MX hosts of a domain, or a relay list) could not be reached are listed; when a message is delivered there, they are all started at once instead of at their next scheduled attempt.",
    ),
    p(
        "hints",
        "helo_memory",
        "\"7d\"",
        "7d",
        "A host that refused EHLO, or closed the connection or went quiet in reply to it, is greeted with HELO (no extensions: no STARTTLS, PIPELINING or 8BITMIME) for this long.",
    ),
    p(
        "hints",
        "quota_unread",
        "\"7d\"",
        "7d",
        "Over quota into a Maildir (5.2.2 from the store, or 4.2.2): deferred as 4.2.2, scheduled by the quota retry rule, while its cur/ directory has changed within this long (readers move and rename messages there, so its modification time is the last read); bounced (5.2.2) when it has not. Observed only where cursusd can see the Maildir (single-user mode); otherwise, and for mbox and MH, the outcome stands as the store gave it.",
    ),
];

/// Routing parameters (read by cursus-route; see docs/examples/routing.toml).
pub const ROUTING: &[Parameter] = &[
    p(
        "routing",
        "local_domains",
        "[\"example.org\", \"localhost\"]",
        "[\"localhost\"]",
        "Domains delivered here; an address there that no router accepts is 5.1.1 user unknown. \
         cursusd adds its hostname and the machine's name (as Postfix's mydestination holds \
         $myhostname), so mail to user@host, bounces to local submitters included, stays local.",
    ),
    p(
        "routing",
        "qualify_domain",
        "\"example.org\"",
        "the first local domain",
        "The domain given to addresses without one.",
    ),
    p(
        "routing",
        "max_depth",
        "20",
        "20",
        "The longest redirect chain.",
    ),
    p(
        "routing",
        "max_addresses",
        "10000",
        "10000",
        "The most addresses one recipient may expand to.",
    ),
    p(
        "router",
        "name",
        "\"localuser\"",
        "required",
        "The router's name, in logs and `cursus address test`.",
    ),
    p(
        "router",
        "driver",
        "\"localuser\"",
        "required",
        "aliases, forward, localuser, virtual, manualroute or dnslookup.",
    ),
    p(
        "router",
        "transport",
        "\"local\"",
        "the first suitable transport",
        "The transport of the deliveries this router decides.",
    ),
    p(
        "router",
        "verify",
        "true",
        "true for local drivers",
        "Whether the router is asked at RCPT time.",
    ),
    p(
        "router",
        "domains",
        "[\"example.org\", \"*.example.net\", \"re:^mx[0-9]+\\\\.example$\"]",
        "local_domains for local drivers, any otherwise",
        "Condition: the recipient's domain (exact, wildcard or re: regular expression).",
    ),
    p(
        "router",
        "local_parts",
        "[\"postmaster\", \"re:^list-\"]",
        "any",
        "Condition: the recipient's local part.",
    ),
    p(
        "router",
        "senders",
        "[\"*@example.org\", \"<>\"]",
        "any",
        "Condition: the envelope sender.",
    ),
    p(
        "router",
        "extension_separator",
        "\"+\"",
        "\"+\"",
        "localuser and virtual: joe+lists is joe with extension lists.",
    ),
    p(
        "router",
        "file",
        "\"/etc/aliases\"",
        "required for aliases",
        "aliases: the aliases(5) file.",
    ),
    p(
        "router",
        "optional",
        "true",
        "false",
        "aliases: a missing file declines instead of deferring.",
    ),
    p(
        "router",
        "user",
        "\"nobody\"",
        "nobody",
        "aliases: the user /file and |command targets run as.",
    ),
    p(
        "router",
        "table",
        "{ file = \"/etc/cursus/virtual\" }",
        "required for virtual",
        "virtual: a flat file (`key value`) or { sqlite = FILE, query = \"... ?\" }; values are `user` or `user KIND:PATH`.",
    ),
    p(
        "router",
        "hosts",
        "[\"smtp.example.net\"]",
        "required for manualroute",
        "manualroute: relay hosts in order.",
    ),
    p("router", "port", "25", "25", "manualroute: the relay port."),
    p(
        "transport",
        "name",
        "\"local\"",
        "required",
        "The transport's name, named by routers.",
    ),
    p(
        "transport",
        "driver",
        "\"lda\"",
        "required",
        "lda (local delivery through cursus-lda), smtp or lmtp.",
    ),
    p(
        "transport",
        "mailbox",
        "\"maildir:~/Maildir\"",
        "maildir:~/Maildir",
        "lda: KIND:PATH with ${user}, ${home}, ${local}, ${domain}, ${extension}; KIND is maildir, mbox or mh.",
    ),
    p(
        "transport",
        "hosts",
        "[\"127.0.0.1\"]",
        "required for lmtp",
        "smtp/lmtp: hosts in order (names, IP literals, HOST:PORT, or unix:/PATH for lmtp); without hosts an smtp transport sends to the MX hosts of the recipient's domain.",
    ),
    p(
        "transport",
        "port",
        "24",
        "25 (smtp), 24 (lmtp)",
        "smtp/lmtp: the port.",
    ),
];

/// The keys of a `[[retry]]` table (read by cursus_route::retry).
pub const RETRY: &[Parameter] = &[
    p(
        "retry",
        "pattern",
        "\"*.example.org\"",
        "\"*\" (every address)",
        "The addresses the rule is for: a domain pattern (example.org, *.example.org, \
         re:REGEX) matches the recipient's domain; a pattern with @ (*@example.org, \
         joe@example.org) matches the whole address.",
    ),
    p(
        "retry",
        "errors",
        "[\"rcpt\", \"data\"]",
        "any error",
        "The error classes the rule is for: refused (connection refused), timeout, dns, \
         greeting (4xx to the greeting or EHLO), mail (4xx to MAIL FROM), rcpt (4xx to RCPT \
         TO), data (4xx after the message), tls, quota (local mailbox over quota), home \
         (local home or mailbox unavailable), other.",
    ),
    p(
        "retry",
        "senders",
        "[\"*@lists.example.org\"]",
        "any sender",
        "Envelope senders the rule is for (<> is the null sender).",
    ),
    p(
        "retry",
        "schedule",
        "\"F,2h,15m; G,16h,1h,1.5; F,4d,6h\"",
        "required",
        "Segments as Exim writes them, cutoffs counted from the message's arrival: \
         F,CUTOFF,INTERVAL retries every INTERVAL until CUTOFF; G,CUTOFF,FIRST,FACTOR starts \
         at FIRST and multiplies each interval by FACTOR (1 to 10). After the last cutoff \
         the last interval repeats. Durations: 30s, 15m, 2h, 4d, 1w. Without a matching \
         rule: F,30m,5m; G,1d,15m,1.5; F,5d,3h, bouncing at queue_lifetime_days. \
         cursus retry test ADDRESS ERROR prints the rule and the attempt times.",
    ),
    p(
        "retry",
        "lifetime",
        "\"4d\"",
        "the last cutoff",
        "When the recipient bounces: a failure at or after this time since arrival is \
         final (5.4.7 with the last error).",
    ),
];

fn esc(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('"', "\\(dq")
}

/// The cursus.toml(5) man page.
pub fn manual(version: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH cursus.toml 5 \"cursus {version}\" \"Cursus\" \"File Formats\"\n\
         .SH NAME\ncursus.toml \\- the configuration of cursusd\n\
         .SH SYNOPSIS\n.B /etc/cursus/cursus.toml\n\
         .SH DESCRIPTION\n\
         One TOML file configures cursusd: its listeners and limits, the data directory, how \
         it reaches cursus\\-lda, STARTTLS, and the routers and transports. Unknown keys are \
         errors reported with file, line, column and the nearest known key; \
         \\fBcursus config check\\fR reads the file as cursusd does. cursusd runs without any \
         file: started by an ordinary user it is in single\\-user mode (SMTP on \
         127.0.0.1:2525, everything under ~/.local/share/cursus, every address at localhost \
         delivered to mail/LOCAL/Maildir there); started as root without /etc/cursus/cursus.toml \
         it uses the system defaults below. A file without routers keeps the mode's default \
         routing: an aliases router on /etc/aliases (while the file exists), then, in system \
         mode, the users' ~/.forward files (read as the user through cursus\\-lda when a \
         message is delivered, not at RCPT time), then local users, every one delivered to \
         ~/Maildir.\n\
         .PP\nWhere mail may finally be written is not decided here: cursus\\-lda checks every \
         delivery against its own policy, cursus\\-lda\\-policy(5).\n"
    ));
    let mut section = None;
    for (title, table) in [
        ("DAEMON PARAMETERS", DAEMON),
        ("ROUTING PARAMETERS", ROUTING),
        ("RETRY RULES", RETRY),
    ] {
        out.push_str(&format!(".SH {title}\n"));
        for param in table {
            if section != Some(param.section) {
                section = Some(param.section);
                let heading = match param.section {
                    "" => "top level".to_string(),
                    "router" => "[[router]] (one table per router, tried in order)".to_string(),
                    "transport" => "[[transport]] (one table per transport)".to_string(),
                    "retry" => "[[retry]] (one table per rule, tried in order)".to_string(),
                    s => format!("[{s}]"),
                };
                out.push_str(&format!(".SS {}\n", esc(&heading)));
            }
            out.push_str(&format!(
                ".TP\n.B {} = {}\n{}\nDefault: {}.\n",
                esc(param.key),
                esc(param.example),
                esc(param.text),
                esc(param.default)
            ));
        }
    }
    out.push_str(
        ".SH SIGNALS\nSIGTERM and SIGINT: stop accepting, answer 421 to open sessions, let \
         deliveries in flight finish. SIGHUP: read the TLS certificate again. SIGUSR1 \
         (cursus sendmail \\-q): try every queued message now.\n\
         .SH FILES\n/etc/cursus/cursus.toml, /var/spool/cursus/queue, \
         /etc/cursus/lda\\-policy.toml, docs/examples/routing.toml in the source. In the \
         data directory: queue/ (the spool), hints.db (see [hints]), cursusd.pid, submit.sock (local submission, any \
         user), showq.sock (the queue listing for mailq, any user), control.sock (mode 0600; \
         root and the daemon's user only: see cursus\\-queue(1)).\n\
         .SH SEE ALSO\n.BR cursusd (8),\n.BR cursus (1),\n.BR cursus\\-lda (8),\n.BR cursus\\-lda\\-policy (5)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented daemon parameter, with its example value, is accepted by the parser.
    #[test]
    fn every_documented_daemon_parameter_parses() {
        let mut text = String::new();
        let mut section = "";
        for param in DAEMON.iter().filter(|p| p.section.is_empty()) {
            text.push_str(&format!("{} = {}\n", param.key, param.example));
        }
        for param in DAEMON.iter().filter(|p| !p.section.is_empty()) {
            if param.section != section {
                section = param.section;
                text.push_str(&format!("[{section}]\n"));
            }
            text.push_str(&format!("{} = {}\n", param.key, param.example));
        }
        let parsed = crate::config::Config::parse(&text, "example", std::path::Path::new("/d"));
        assert!(parsed.is_ok(), "{text}\n{parsed:?}");
        // The routing and retry parsers read the same file and skip the daemon's tables.
        let routing = cursus_route::RoutingConfig::parse(&text, "example");
        assert!(routing.is_ok(), "{text}\n{routing:?}");
        assert!(cursus_route::retry::RetryRules::parse(&text, "example", 86_400).is_ok());
    }

    /// A [[retry]] table with every documented key parses with the retry parser, and
    /// the daemon's and the routing parser accept the file around it.
    #[test]
    fn documented_retry_table_parses() {
        let mut text = String::from("[[retry]]\n");
        for param in RETRY {
            text.push_str(&format!("{} = {}\n", param.key, param.example));
        }
        let rules = cursus_route::retry::RetryRules::parse(&text, "example", 86_400);
        assert!(rules.is_ok_and(|r| r.rules.len() == 1), "{text}");
        assert!(crate::config::Config::parse(&text, "example", std::path::Path::new("/d")).is_ok());
        assert!(cursus_route::RoutingConfig::parse(&text, "example").is_ok());
    }

    /// A key no parser knows: each refuses it and lists the keys its table does know
    /// (serde names every field of the struct it reads into).
    const PROBE: &str = "zzzzzzzzzzzzzzzzzzzz";

    /// The keys listed in a refusal of [`PROBE`]; `None` when the error is another one
    /// (the key holds a value, not a table).
    fn listed(messages: &[String]) -> Option<Vec<String>> {
        let message = messages.first()?;
        if !message.contains(PROBE) {
            return None;
        }
        let (_, list) = message
            .split_once("known keys: ")
            .or_else(|| message.split_once("known: "))
            .unwrap_or_else(|| panic!("the refusal lists no keys: {message}"));
        Some(list.split(", ").map(|k| k.trim().to_string()).collect())
    }

    fn daemon(text: &str) -> Result<(), Vec<String>> {
        crate::config::Config::parse(text, "probe", std::path::Path::new("/d"))
            .map(|_| ())
            .map_err(|e| e.iter().map(|e| e.message.clone()).collect())
    }

    fn routing(text: &str) -> Result<(), Vec<String>> {
        cursus_route::RoutingConfig::parse(text, "probe")
            .map(|_| ())
            .map_err(|e| e.iter().map(|e| e.message.clone()).collect())
    }

    fn retry(text: &str) -> Result<(), Vec<String>> {
        cursus_route::retry::RetryRules::parse(text, "probe", 86_400)
            .map(|_| ())
            .map_err(|e| e.iter().map(|e| e.message.clone()).collect())
    }

    /// The keys `parse` accepts in the table `header` opens (`""`: the top level).
    fn accepted(parse: fn(&str) -> Result<(), Vec<String>>, header: &str) -> Option<Vec<String>> {
        parse(&format!("{header}\n{PROBE} = 0\n"))
            .err()
            .and_then(|e| listed(&e))
    }

    fn documented(tables: &[&[Parameter]], section: &str, key: &str) -> Option<Parameter> {
        tables
            .iter()
            .flat_map(|t| t.iter())
            .find(|p| p.section == section && p.key == key)
            .copied()
    }

    /// Whether `word` appears as a word in `text` (the keys of an inline table are named
    /// in the text of the parameter that holds it).
    fn names(text: &str, word: &str) -> bool {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == word)
    }

    /// The keys among `keys` (accepted by `parse` in the table `header` opens, `section` in
    /// the tables) that have no row, and the keys of tables inside one that its text does
    /// not name.
    fn undocumented(
        parse: fn(&str) -> Result<(), Vec<String>>,
        section: &str,
        header: &str,
        keys: Vec<String>,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        for key in keys {
            let Some(param) = documented(&[DAEMON, ROUTING, RETRY], section, &key) else {
                missing.push(format!("[{section}] {key}"));
                continue;
            };
            // An inline table or an array of tables below this key.
            for inner in [
                format!("{header}\n{key} = {{ {PROBE} = 0 }}"),
                format!("{header}\n{key} = [{{ {PROBE} = 0 }}]"),
            ] {
                for k in parse(&inner)
                    .err()
                    .and_then(|e| listed(&e))
                    .unwrap_or_default()
                {
                    if !names(param.text, &k) {
                        missing.push(format!("[{section}] {key}.{k} (not in its text)"));
                    }
                }
            }
        }
        missing
    }

    /// The other direction of the checks above: every key a parser accepts (as the
    /// parsers themselves list them, so a field added to a serde struct is seen) has a row
    /// in DAEMON, ROUTING or RETRY, and the keys of tables inside a parameter
    /// ([[outbound.auth]], a router's `table`) are named in its text. A key that parses but
    /// is missing from cursus.toml(5) fails here.
    #[test]
    fn every_key_the_parsers_accept_is_documented() {
        let mut missing = Vec::new();
        let top = accepted(daemon, "").expect("the daemon's parser lists its top-level keys");
        let mut elsewhere = Vec::new();
        for key in &top {
            let header = format!("[{key}]");
            match daemon(&format!("{header}\n{PROBE} = 0\n")) {
                // Not read by the daemon: the routing and retry parsers' tables.
                Ok(()) => elsewhere.push(key.clone()),
                Err(e) => match listed(&e) {
                    Some(keys) => missing.extend(undocumented(daemon, key, &header, keys)),
                    // A value, not a table.
                    None => missing.extend(undocumented(daemon, "", "", vec![key.clone()])),
                },
            }
        }
        assert!(!elsewhere.is_empty(), "routing tables are in the same file");
        for key in &elsewhere {
            let found = [routing, retry].into_iter().find_map(|parse| {
                [format!("[{key}]"), format!("[[{key}]]")]
                    .into_iter()
                    .find_map(|header| accepted(parse, &header).map(|keys| (parse, header, keys)))
            });
            match found {
                Some((parse, header, keys)) => {
                    let mut base = String::new();
                    if key == "router" {
                        base = "name = \"r\"\ndriver = \"virtual\"".to_string();
                    }
                    let header = if base.is_empty() {
                        header
                    } else {
                        format!("{header}\n{base}")
                    };
                    missing.extend(undocumented(parse, key, &header, keys));
                }
                None => missing.push(format!("[{key}]: no parser reads it")),
            }
        }
        assert!(
            missing.is_empty(),
            "accepted but not documented in parameters.rs: {missing:#?}"
        );

        // Both parsers read the one file: they accept the same top-level keys.
        let mut daemon_top = top.clone();
        let mut routing_top = accepted(routing, "").expect("the routing parser lists its keys");
        daemon_top.sort();
        routing_top.sort();
        assert_eq!(
            daemon_top, routing_top,
            "top-level keys of config.rs and cursus-route"
        );
    }

    /// The routing parameters of [routing] parse with the routing parser.
    #[test]
    fn documented_routing_section_parses() {
        let mut text = String::from("[routing]\n");
        for param in ROUTING.iter().filter(|p| p.section == "routing") {
            text.push_str(&format!("{} = {}\n", param.key, param.example));
        }
        assert!(
            cursus_route::RoutingConfig::parse(&text, "example").is_ok(),
            "{text}"
        );
    }
}
