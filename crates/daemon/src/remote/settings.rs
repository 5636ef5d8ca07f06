//! The `[outbound]` section of cursus.toml: the DNS resolver, TLS policy, client timeouts
//! (RFC 5321 §4.5.3.2), connection reuse and per-destination limits, and `[[outbound.auth]]`
//! credentials for smarthosts.
//!
//! Trusts the file's owner; checks every value (durations above zero, a resolver that is
//! HOST:PORT, a password given once). Fails with messages that name the key; config.rs
//! turns them into [`crate::config::ConfigError`]s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cursus_proto::{EightBitRule, TlsMode};
use serde::Deserialize;

/// Credentials for one relay host (a smarthost).
#[derive(Clone, PartialEq, Eq)]
pub struct HostAuth {
    /// The host name as routers and transports name it.
    pub host: String,
    pub user: String,
    pub password: String,
    /// Send the credentials without TLS (off: AUTH only after STARTTLS).
    pub without_tls: bool,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostAuth {{ host: {:?}, user: {:?} }}",
            self.host, self.user
        )
    }
}

/// Client timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// §4.5.3.2.1: the greeting (also EHLO, STARTTLS, AUTH replies).
    pub greeting: Duration,
    /// §4.5.3.2.2: MAIL.
    pub mail: Duration,
    /// §4.5.3.2.3: RCPT.
    pub rcpt: Duration,
    /// §4.5.3.2.4: DATA initiation (354).
    pub data_init: Duration,
    /// §4.5.3.2.5: each write of the content.
    pub data_block: Duration,
    /// §4.5.3.2.6: the reply after the content.
    pub data_done: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
        }
    }
}

/// Everything the outbound transports need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The DNS server to ask (`None`: /etc/resolv.conf).
    pub resolver: Option<SocketAddr>,
    /// The name in EHLO (`None`: the daemon's host name).
    pub helo_name: Option<String>,
    pub tls: TlsMode,
    /// PEM file with extra trust anchors (a private CA), besides Mozilla's roots.
    pub tls_ca_file: Option<PathBuf>,
    pub eight_bit: EightBitRule,
    pub chunking: bool,
    pub timeouts: Timeouts,
    /// Connections open at once to one destination (a domain's MX set, or a host list).
    pub connections_per_destination: usize,
    /// Messages sent over one connection before it is closed.
    pub messages_per_connection: usize,
    /// How long an idle connection is kept for the next message.
    pub idle: Duration,
    /// Recipients in one transaction; more are split.
    pub recipients_per_transaction: usize,
    pub auth: Vec<HostAuth>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resolver: None,
            helo_name: None,
            tls: TlsMode::Opportunistic,
            tls_ca_file: None,
            eight_bit: EightBitRule::Send,
            chunking: true,
            timeouts: Timeouts::default(),
            connections_per_destination: 20,
            messages_per_connection: 1000,
            idle: Duration::from_secs(5),
            recipients_per_transaction: 100,
            auth: Vec::new(),
        }
    }
}

/// `[outbound]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    resolver: Option<String>,
    helo_name: Option<String>,
    tls: Option<String>,
    tls_ca_file: Option<String>,
    eight_bit: Option<String>,
    chunking: Option<bool>,
    connect_timeout: Option<u64>,
    greeting_timeout: Option<u64>,
    mail_timeout: Option<u64>,
    rcpt_timeout: Option<u64>,
    data_init_timeout: Option<u64>,
    data_block_timeout: Option<u64>,
    data_done_timeout: Option<u64>,
    connections_per_destination: Option<usize>,
    messages_per_connection: Option<usize>,
    idle_timeout: Option<u64>,
    recipients_per_transaction: Option<usize>,
    #[serde(default)]
    auth: Vec<RawAuth>,
}

/// `[[outbound.auth]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    host: String,
    user: String,
    password: Option<String>,
    password_file: Option<String>,
    without_tls: Option<bool>,
}

impl Settings {
    /// Checks `raw` over the defaults; every problem is one message.
    pub fn from_raw(raw: RawOutbound) -> Result<Settings, Vec<String>> {
        let mut s = Settings::default();
        let mut errors = Vec::new();
        if let Some(r) = raw.resolver {
            let text = if r.parse::<std::net::IpAddr>().is_ok() {
                format!("{r}:53")
            } else {
                r.clone()
            };
            match text.parse::<SocketAddr>() {
                Ok(a) => s.resolver = Some(a),
                Err(_) => errors.push(format!(
                    "outbound.resolver: `{r}` is not IP or IP:PORT (127.0.0.1:53, [::1]:53)"
                )),
            }
        }
        if let Some(h) = raw.helo_name {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c.is_control()) {
                errors.push(format!("outbound.helo_name: `{h}` is not a host name"));
            }
            s.helo_name = Some(h);
        }
        if let Some(t) = raw.tls {
            s.tls = match t.as_str() {
                "never" => TlsMode::Never,
                "opportunistic" => TlsMode::Opportunistic,
                "required" => TlsMode::Required,
                other => {
                    errors.push(format!(
                        "outbound.tls: `{other}`: use never, opportunistic or required"
                    ));
                    TlsMode::Opportunistic
                }
            };
        }
        s.tls_ca_file = raw.tls_ca_file.map(PathBuf::from);
        if let Some(e) = raw.eight_bit {
            s.eight_bit = match e.as_str() {
                "send" => EightBitRule::Send,
                "refuse" => EightBitRule::Refuse,
                other => {
                    errors.push(format!("outbound.eight_bit: `{other}`: use send or refuse"));
                    EightBitRule::Send
                }
            };
        }
        if let Some(c) = raw.chunking {
            s.chunking = c;
        }
        let t = &mut s.timeouts;
        for (name, value, slot) in [
            ("connect_timeout", raw.connect_timeout, &mut t.connect),
            ("greeting_timeout", raw.greeting_timeout, &mut t.greeting),
            ("mail_timeout", raw.mail_timeout, &mut t.mail),
            ("rcpt_timeout", raw.rcpt_timeout, &mut t.rcpt),
            ("data_init_timeout", raw.data_init_timeout, &mut t.data_init),
            (
                "data_block_timeout",
                raw.data_block_timeout,
                &mut t.data_block,
            ),
            ("data_done_timeout", raw.data_done_timeout, &mut t.data_done),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    errors.push(format!("outbound.{name} must be at least 1 second"));
                }
                *slot = Duration::from_secs(v);
            }
        }
        for (name, value, slot) in [
            (
                "connections_per_destination",
                raw.connections_per_destination,
                &mut s.connections_per_destination,
            ),
            (
                "messages_per_connection",
                raw.messages_per_connection,
                &mut s.messages_per_connection,
            ),
            (
                "recipients_per_transaction",
                raw.recipients_per_transaction,
                &mut s.recipients_per_transaction,
            ),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    errors.push(format!("outbound.{name} must be at least 1"));
                }
                *slot = v;
            }
        }
        if let Some(i) = raw.idle_timeout {
            s.idle = Duration::from_secs(i);
        }
        for a in raw.auth {
            let password = match (a.password, a.password_file) {
                (Some(p), None) => p,
                (None, Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(text) => text.trim_end_matches(['\r', '\n']).to_string(),
                    Err(e) => {
                        errors.push(format!("outbound.auth {}: password_file {f}: {e}", a.host));
                        String::new()
                    }
                },
                _ => {
                    errors.push(format!(
                        "outbound.auth {}: give either `password` or `password_file`",
                        a.host
                    ));
                    String::new()
                }
            };
            s.auth.push(HostAuth {
                host: a.host.to_ascii_lowercase(),
                user: a.user,
                password,
                without_tls: a.without_tls.unwrap_or(false),
            });
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }

    /// The credentials for `host`, if any.
    pub fn auth_for(&self, host: &str) -> Option<&HostAuth> {
        let host = host.to_ascii_lowercase();
        self.auth.iter().find(|a| a.host == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, Vec<String>> {
        let raw: RawOutbound = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        Settings::from_raw(raw)
    }

    #[test]
    fn values_override_defaults() {
        let s = parse(
            "resolver = \"127.0.0.1:5353\"\ntls = \"required\"\nrcpt_timeout = 7\n[[auth]]\nhost = \"Relay.example\"\nuser = \"u\"\npassword = \"p\"\n",
        )
        .expect("parses");
        assert_eq!(s.resolver, Some("127.0.0.1:5353".parse().expect("addr")));
        assert_eq!(s.tls, TlsMode::Required);
        assert_eq!(s.timeouts.rcpt, Duration::from_secs(7));
        assert_eq!(
            s.auth_for("relay.EXAMPLE").map(|a| a.user.as_str()),
            Some("u")
        );
        assert_eq!(
            parse("resolver = \"10.0.0.1\"").expect("ip").resolver,
            Some("10.0.0.1:53".parse().expect("addr"))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("tls = \"maybe\"\nmail_timeout = 0\nresolver = \"dns\"\n").expect_err("bad");
        assert_eq!(e.len(), 3, "{e:?}");
        let e = parse("[[auth]]\nhost = \"h\"\nuser = \"u\"\n").expect_err("no password");
        assert!(e[0].contains("password"), "{e:?}");
    }
}
