//! cursus.toml: the daemon's own settings (listeners, limits, the data directory, how to
//! reach cursus-lda). The `[[router]]` and `[[transport]]` tables of the same file belong to
//! the routing configuration and are read there.
//!
//! Trusts the file's owner (root, or the user in single-user mode); checks every value.
//! Fails with [`ConfigError`]s carrying file, line, column and, for an unknown key, the
//! nearest known one. Runs with no file at all: [`Config::single_user`] is the embedded
//! default (127.0.0.1:2525, one data directory, `localhost` delivered into Maildirs under
//! it).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cursus_mail::diagnostic::{line_col, suggest, unknown_field};
use serde::Deserialize;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("`{text}`: a unix socket path must be absolute"));
            }
            return Ok(ListenAddr::Unix(path));
        }
        text.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| {
                format!("`{text}` is neither HOST:PORT (127.0.0.1:25, [::1]:25) nor unix:/PATH")
            })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Limits of the SMTP and LMTP servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub message_size: u64,
    pub recipients: usize,
    pub messages_per_connection: usize,
    pub command_line: usize,
    pub errors: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_connections_per_client: 50,
            message_size: 25 * 1024 * 1024,
            recipients: 100,
            messages_per_connection: 1000,
            command_line: 1024,
            errors: 20,
        }
    }
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the file came from (`(embedded defaults)` without one).
    pub source: String,
    pub hostname: String,
    pub data_dir: PathBuf,
    /// The user to become when started as root.
    pub run_as: String,
    pub smtp_listen: Vec<ListenAddr>,
    pub lmtp_listen: Vec<ListenAddr>,
    pub limits: ServerLimits,
    /// Refuse unknown local recipients at RCPT (550 5.1.1).
    pub verify_local: bool,
    /// Verify recipients in domains that are not local (relayed) at RCPT too, with the
    /// verification routers; off: any such recipient is accepted once relaying is allowed.
    pub verify_remote: bool,
    /// Seconds to wait before the greeting; a client that talks first is refused.
    pub greet_pause_ms: u64,
    /// cursus-lda's socket; `None`: started as root, spawn it; as a user, deliver in-process.
    pub lda_socket: Option<PathBuf>,
    /// Connections kept to cursus-lda.
    pub lda_connections: usize,
    /// The policy file of a cursus-lda that cursusd starts itself (its default otherwise).
    pub lda_policy: Option<PathBuf>,
    /// The local submission socket for `cursus sendmail`.
    pub submission_socket: PathBuf,
    /// Days after which an undeliverable message is bounced.
    pub queue_lifetime_days: u64,
    /// STARTTLS certificate chain and key (PEM); `None`: STARTTLS is not offered.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The outbound SMTP/LMTP client (`[outbound]`).
    pub outbound: crate::remote::Settings,
    /// The hints database (`[hints]`).
    pub hints: crate::hints::Settings,
    /// Delivery status notifications (`[bounce]`).
    pub bounce: BounceSettings,
    /// The RFC 5321 §4.5.3.2 waits of the SMTP and LMTP servers (reads, and writes of the
    /// replies); the RFC's unless configured.
    pub timeouts: cursus_proto::Timeouts,
    /// Octets that must stay free on the queue's file system: below it (plus a declared
    /// SIZE), MAIL, DATA and BDAT get 452 4.3.1.
    pub queue_min_free: u64,
}

/// The default of `smtp.queue_min_free`: Exim's check_spool_space default, 10 MiB.
pub const QUEUE_MIN_FREE: u64 = 10 * 1024 * 1024;

impl Config {
    /// The embedded default: single-user mode in `data_dir`.
    pub fn single_user(data_dir: &Path) -> Config {
        Config {
            source: "(embedded defaults)".to_string(),
            hostname: local_hostname(),
            data_dir: data_dir.to_path_buf(),
            run_as: "cursus".to_string(),
            smtp_listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 2525)))],
            lmtp_listen: Vec::new(),
            limits: ServerLimits::default(),
            verify_local: true,
            verify_remote: false,
            greet_pause_ms: 0,
            lda_socket: None,
            lda_connections: 8,
            lda_policy: None,
            submission_socket: data_dir.join("submit.sock"),
            queue_lifetime_days: 5,
            tls: None,
            outbound: crate::remote::Settings::default(),
            hints: crate::hints::Settings::default(),
            bounce: BounceSettings::default(),
            timeouts: cursus_proto::Timeouts::default(),
            queue_min_free: QUEUE_MIN_FREE,
        }
    }

    /// Reads `text` (the file at `source`) over the defaults for `data_dir`.
    pub fn parse(text: &str, source: &str, data_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        let raw: RawFile = toml::from_str(text).map_err(|e| vec![toml_error(&e, text, source)])?;
        let mut c = Config::single_user(raw.data_dir.as_deref().map(Path::new).unwrap_or(data_dir));
        c.source = source.to_string();
        let mut errors = Vec::new();
        let mut err = |message: String| {
            errors.push(ConfigError {
                source: source.to_string(),
                line: None,
                message,
            })
        };
        if let Some(h) = raw.hostname {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c.is_control()) {
                err(format!("hostname `{h}` is not a host name"));
            }
            c.hostname = h;
        }
        if let Some(u) = raw.user {
            c.run_as = u;
        }
        if let Some(days) = raw.queue_lifetime_days {
            c.queue_lifetime_days = days;
        }
        if let Some(smtp) = raw.smtp {
            if let Some(listen) = smtp.listen {
                c.smtp_listen = Vec::new();
                for l in listen {
                    match ListenAddr::parse(&l) {
                        Ok(a) => c.smtp_listen.push(a),
                        Err(e) => err(format!("smtp.listen: {e}")),
                    }
                }
            }
            let lim = &mut c.limits;
            set(&mut lim.max_connections, smtp.max_connections);
            set(
                &mut lim.max_connections_per_client,
                smtp.max_connections_per_client,
            );
            set(&mut lim.message_size, smtp.message_size);
            set(&mut lim.recipients, smtp.recipients);
            set(
                &mut lim.messages_per_connection,
                smtp.messages_per_connection,
            );
            set(&mut lim.command_line, smtp.command_line);
            set(&mut c.verify_local, smtp.verify_local_recipients);
            set(&mut c.verify_remote, smtp.verify_remote_recipients);
            set(&mut c.greet_pause_ms, smtp.greet_pause_ms);
            set(&mut c.queue_min_free, smtp.queue_min_free);
            let t = &mut c.timeouts;
            for (name, value, slot) in [
                ("initial_timeout", smtp.initial_timeout, &mut t.initial),
                ("mail_timeout", smtp.mail_timeout, &mut t.mail),
                ("rcpt_timeout", smtp.rcpt_timeout, &mut t.rcpt),
                (
                    "data_init_timeout",
                    smtp.data_init_timeout,
                    &mut t.data_initiation,
                ),
                (
                    "data_block_timeout",
                    smtp.data_block_timeout,
                    &mut t.data_block,
                ),
                (
                    "data_done_timeout",
                    smtp.data_done_timeout,
                    &mut t.data_termination,
                ),
            ] {
                if let Some(secs) = value {
                    if secs == 0 {
                        err(format!("smtp.{name} must be at least 1 second"));
                    }
                    *slot = std::time::Duration::from_secs(secs);
                }
            }
            if c.limits.command_line < 512 {
                err("smtp.command_line must be at least 512 (RFC 5321 §4.5.3.1.4)".to_string());
            }
        }
        if let Some(lmtp) = raw.lmtp
            && let Some(listen) = lmtp.listen
        {
            for l in listen {
                match ListenAddr::parse(&l) {
                    Ok(a) => c.lmtp_listen.push(a),
                    Err(e) => err(format!("lmtp.listen: {e}")),
                }
            }
        }
        if let Some(lda) = raw.lda {
            c.lda_socket = lda.socket.map(PathBuf::from);
            c.lda_policy = lda.policy.map(PathBuf::from);
            set(&mut c.lda_connections, lda.connections);
        }
        if let Some(tls) = raw.tls {
            match (tls.certificate, tls.key) {
                (Some(cert), Some(key)) => c.tls = Some((PathBuf::from(cert), PathBuf::from(key))),
                _ => err("tls: give both `certificate` and `key`".to_string()),
            }
        }
        if let Some(outbound) = raw.outbound {
            match crate::remote::Settings::from_raw(outbound) {
                Ok(o) => c.outbound = o,
                Err(messages) => messages.into_iter().for_each(&mut err),
            }
        }
        if let Some(b) = raw.bounce {
            if let Some(t) = b.templates {
                c.bounce.templates = Some(PathBuf::from(t));
            }
            if let Some(s) = b.unknown_user_script {
                if !s.starts_with('/') {
                    err(format!(
                        "bounce: unknown_user_script `{s}` must be an absolute path (it runs \
                         without a shell or a search path)"
                    ));
                }
                c.bounce.unknown_user_script = Some(PathBuf::from(s));
            }
            if let Some(list) = b.delay_warnings {
                c.bounce.delay_warnings.clear();
                for w in list {
                    match cursus_route::retry::duration(&w) {
                        Ok(0) => err(format!(
                            "bounce: delay_warnings `{w}` must be after arrival"
                        )),
                        Ok(secs) => c.bounce.delay_warnings.push(secs),
                        Err(e) => err(format!("bounce: delay_warnings: {e}")),
                    }
                }
                c.bounce.delay_warnings.sort_unstable();
                c.bounce.delay_warnings.dedup();
            }
        }
        if let Some(h) = raw.hints {
            let hs = &mut c.hints;
            set(&mut hs.enabled, h.enabled);
            set(&mut hs.start_waiting, h.start_waiting);
            for (slot, value, key) in [
                (&mut hs.tidy_interval, h.tidy_interval, "tidy_interval"),
                (&mut hs.keep, h.keep, "keep"),
                (
                    &mut hs.no_mx_refused_lifetime,
                    h.no_mx_refused_lifetime,
                    "no_mx_refused_lifetime",
                ),
                (
                    &mut hs.timeout_bounce_memory,
                    h.timeout_bounce_memory,
                    "timeout_bounce_memory",
                ),
                (&mut hs.helo_memory, h.helo_memory, "helo_memory"),
                (&mut hs.quota_unread, h.quota_unread, "quota_unread"),
            ] {
                if let Some(v) = value {
                    match cursus_route::retry::duration(&v) {
                        Ok(secs) => *slot = secs,
                        Err(e) => err(format!("hints.{key}: {e}")),
                    }
                }
            }
            if hs.tidy_interval < 60 {
                err("hints.tidy_interval must be at least 1m".to_string());
            }
        }
        if let Some(sub) = raw.submission
            && let Some(s) = sub.socket
        {
            c.submission_socket = PathBuf::from(s);
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The machine's host name (the greeting and Received headers use it).
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

const TOP_KEYS: &[&str] = &[
    "hostname",
    "data_dir",
    "user",
    "queue_lifetime_days",
    "smtp",
    "lmtp",
    "lda",
    "submission",
    "tls",
    "outbound",
    "hints",
    "bounce",
    "routing",
    "router",
    "transport",
    "retry",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    hostname: Option<String>,
    data_dir: Option<String>,
    user: Option<String>,
    queue_lifetime_days: Option<u64>,
    smtp: Option<RawSmtp>,
    lmtp: Option<RawLmtp>,
    lda: Option<RawLda>,
    submission: Option<RawSubmission>,
    tls: Option<RawTls>,
    outbound: Option<crate::remote::settings::RawOutbound>,
    hints: Option<RawHints>,
    bounce: Option<RawBounce>,
    /// Read by the routing configuration.
    #[serde(default, rename = "routing")]
    _routing: Option<toml::Value>,
    #[serde(default, rename = "router")]
    _router: Option<toml::Value>,
    #[serde(default, rename = "transport")]
    _transport: Option<toml::Value>,
    /// Read by the retry rules (cursus_route::retry).
    #[serde(default, rename = "retry")]
    _retry: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    listen: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    message_size: Option<u64>,
    recipients: Option<usize>,
    messages_per_connection: Option<usize>,
    command_line: Option<usize>,
    verify_local_recipients: Option<bool>,
    verify_remote_recipients: Option<bool>,
    greet_pause_ms: Option<u64>,
    queue_min_free: Option<u64>,
    initial_timeout: Option<u64>,
    mail_timeout: Option<u64>,
    rcpt_timeout: Option<u64>,
    data_init_timeout: Option<u64>,
    data_block_timeout: Option<u64>,
    data_done_timeout: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHints {
    enabled: Option<bool>,
    tidy_interval: Option<String>,
    keep: Option<String>,
    no_mx_refused_lifetime: Option<String>,
    timeout_bounce_memory: Option<String>,
    helo_memory: Option<String>,
    quota_unread: Option<String>,
    start_waiting: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLmtp {
    listen: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLda {
    socket: Option<String>,
    policy: Option<String>,
    connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounce {
    templates: Option<String>,
    unknown_user_script: Option<String>,
    delay_warnings: Option<Vec<String>>,
}

/// `[bounce]`: how delivery status notifications are written and when delay notices go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceSettings {
    /// A directory with failed.txt, delayed.txt and delivered.txt replacing the built-in
    /// first parts (each optional).
    pub templates: Option<PathBuf>,
    /// A program whose output explains an unknown local user to the sender.
    pub unknown_user_script: Option<PathBuf>,
    /// Ages (seconds since arrival) at which a still-deferred recipient's sender is told.
    pub delay_warnings: Vec<u64>,
}

impl Default for BounceSettings {
    fn default() -> Self {
        BounceSettings {
            templates: None,
            unknown_user_script: None,
            delay_warnings: vec![86_400],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmission {
    socket: Option<String>,
}

fn toml_error(e: &toml::de::Error, text: &str, source: &str) -> ConfigError {
    let line = e.span().map(|s| line_col(text, s.start));
    let mut message = e.message().trim().to_string();
    if let Some(unknown) = unknown_field(&message) {
        let listed: Vec<&str> = message
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let known: &[&str] = if listed.is_empty() { TOP_KEYS } else { &listed };
        message = match suggest(&unknown, known) {
            Some(s) => format!("unknown key `{unknown}`; did you mean `{s}`?"),
            None => format!("unknown key `{unknown}`; known keys: {}", known.join(", ")),
        };
    }
    ConfigError {
        source: source.to_string(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_single_user_on_port_2525() {
        let c = Config::single_user(Path::new("/tmp/d"));
        assert_eq!(
            c.smtp_listen,
            vec![ListenAddr::parse("127.0.0.1:2525").expect("addr")]
        );
        assert_eq!(c.submission_socket, Path::new("/tmp/d/submit.sock"));
        assert!(c.verify_local);
    }

    #[test]
    fn values_override_defaults() {
        let c = Config::parse(
            "hostname = \"mx.example.org\"\n[smtp]\nlisten = [\"[::1]:25\", \"unix:/run/x.sock\"]\nrecipients = 50\n[lmtp]\nlisten = [\"127.0.0.1:24\"]\n",
            "cursus.toml",
            Path::new("/d"),
        )
        .expect("parses");
        assert_eq!(c.hostname, "mx.example.org");
        assert_eq!(c.smtp_listen.len(), 2);
        assert_eq!(c.limits.recipients, 50);
        assert_eq!(c.lmtp_listen.len(), 1);
    }

    #[test]
    fn unknown_keys_get_a_line_and_a_suggestion() {
        let e = Config::parse(
            "[smtp]\nlisten = []\nrecipents = 5\n",
            "cursus.toml",
            Path::new("/d"),
        )
        .expect_err("unknown key");
        let text = e[0].to_string();
        assert!(text.starts_with("cursus.toml:3:"), "{text}");
        assert!(text.contains("did you mean `recipients`"), "{text}");
        let e = Config::parse("hostnme = \"x\"\n", "c.toml", Path::new("/d")).expect_err("top");
        assert!(
            e[0].to_string().contains("did you mean `hostname`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn hints_durations_are_read_and_checked() {
        let c = Config::parse(
            "[hints]\nno_mx_refused_lifetime = \"30m\"\nquota_unread = \"0\"\nstart_waiting = false\n",
            "c.toml",
            Path::new("/d"),
        )
        .expect("parses");
        assert_eq!(c.hints.no_mx_refused_lifetime, 1800);
        assert_eq!(c.hints.quota_unread, 0);
        assert!(!c.hints.start_waiting);
        assert_eq!(c.hints.helo_memory, 7 * 86_400);
        let e = Config::parse("[hints]\nkeep = \"3x\"\n", "c.toml", Path::new("/d"))
            .expect_err("bad duration");
        assert!(e[0].message.starts_with("hints.keep:"), "{}", e[0]);
    }

    #[test]
    fn reception_timeouts_and_the_queue_reserve_are_read_and_checked() {
        let c = Config::parse("", "c.toml", Path::new("/d")).expect("empty");
        assert_eq!(c.timeouts, cursus_proto::Timeouts::default());
        assert_eq!(c.queue_min_free, QUEUE_MIN_FREE);
        let c = Config::parse(
            "[smtp]\nmail_timeout = 7\ndata_block_timeout = 2\nqueue_min_free = 0\n",
            "c.toml",
            Path::new("/d"),
        )
        .expect("parses");
        assert_eq!(c.timeouts.mail, std::time::Duration::from_secs(7));
        assert_eq!(c.timeouts.data_block, std::time::Duration::from_secs(2));
        assert_eq!(c.timeouts.rcpt, std::time::Duration::from_secs(300));
        assert_eq!(c.queue_min_free, 0);
        let e = Config::parse("[smtp]\nrcpt_timeout = 0\n", "c.toml", Path::new("/d"))
            .expect_err("zero");
        assert!(e[0].message.contains("rcpt_timeout"), "{}", e[0]);
    }

    #[test]
    fn bad_listen_addresses_are_explained() {
        let e = Config::parse(
            "[smtp]\nlisten = [\"localhost\"]\n",
            "c.toml",
            Path::new("/d"),
        )
        .expect_err("bad");
        assert!(e[0].message.contains("HOST:PORT"), "{}", e[0]);
    }
}
