//! The routing configuration: `[routing]` settings, `[[router]]` tables tried in order and
//! `[[transport]]` tables, read from TOML and validated in one pass into typed values.
//!
//! Trusts nothing in the text: unknown keys (with a did-you-mean), unknown drivers,
//! options that do not apply to a router's driver, bad patterns and regular expressions,
//! bad mailbox templates, duplicate names, and references to transports that do not exist
//! (with a suggestion) are all errors. Fails with every problem found, each a
//! [`ConfigError`] with `file:line:col`. Never touches the filesystem: files and tables
//! named here are read when routing (and reloaded when they change).
//!
//! Attacks stopped: a typo that silently disables a condition or a router (`domian =`
//! would otherwise route every domain; unknown keys are errors); a router that quietly
//! sends mail nowhere because its transport is misspelt (checked at load, not at the first
//! message).

use std::fmt;
use std::path::PathBuf;

use cursus_mail::diagnostic::{line_col, suggest, unknown_field};
use serde::Deserialize;
use toml::Spanned;

use crate::pattern::{Conditions, PatternList};
use crate::transport::{DEFAULT_MAILBOX, MailboxTemplate, Transport, TransportDriver};

/// The default longest redirect chain (aliases, includes and .forward files counted).
pub const DEFAULT_MAX_DEPTH: usize = 20;
/// The default most addresses one recipient may expand to.
pub const DEFAULT_MAX_ADDRESSES: usize = 10_000;
/// The default address extension separator.
pub const DEFAULT_SEPARATOR: &str = "+";
/// The name of the default local transport.
pub const LOCAL_TRANSPORT: &str = "local";
/// Postfix's `default_privs`: the user alias file and command targets are delivered as.
pub const DEFAULT_ALIAS_USER: &str = cursus_lda::generate::DEFAULT_PRIVS;

const TOP_KEYS: &[&str] = &[
    "routing",
    "router",
    "transport",
    "retry",
    // cursus.toml's other sections, read by cursusd's own configuration.
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
    "bounce",
    "hints",
];
const DRIVERS: &[&str] = &[
    "aliases",
    "forward",
    "localuser",
    "virtual",
    "manualroute",
    "dnslookup",
];
const TRANSPORT_DRIVERS: &[&str] = &["lda", "smtp", "lmtp"];

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    /// 1-based line and column.
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a virtual router looks addresses up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSpec {
    /// `key value` lines.
    File(PathBuf),
    /// A query with one `?` parameter.
    Sqlite { path: PathBuf, query: String },
}

impl fmt::Display for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSpec::File(p) => write!(f, "file {}", p.display()),
            TableSpec::Sqlite { path, .. } => write!(f, "sqlite {}", path.display()),
        }
    }
}

/// What a router does with an address its conditions accept.
#[derive(Debug, Clone)]
pub enum Driver {
    /// /etc/aliases syntax. `user`: as whom file and command targets are delivered.
    Aliases {
        file: PathBuf,
        optional: bool,
        user: String,
    },
    /// The user's .forward.
    Forward,
    /// The local part is a user in the user database.
    LocalUser,
    /// Address or `@domain` to `user [destination]` from a table.
    Virtual { table: TableSpec },
    /// To these relay hosts.
    ManualRoute { hosts: Vec<String>, port: u16 },
    /// To the domain's MX hosts (decided here, looked up by the outbound transport).
    DnsLookup,
}

impl Driver {
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Aliases { .. } => "aliases",
            Driver::Forward => "forward",
            Driver::LocalUser => "localuser",
            Driver::Virtual { .. } => "virtual",
            Driver::ManualRoute { .. } => "manualroute",
            Driver::DnsLookup => "dnslookup",
        }
    }

    /// Whether the driver redirects (skipped for `\user` targets).
    pub fn redirects(&self) -> bool {
        matches!(self, Driver::Aliases { .. } | Driver::Forward)
    }

    fn remote(&self) -> bool {
        matches!(self, Driver::ManualRoute { .. } | Driver::DnsLookup)
    }
}

/// One validated `[[router]]`.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub name: String,
    /// The line of the `[[router]]` header (0 for built-in defaults).
    pub line: usize,
    pub conditions: Conditions,
    /// Whether the router is used to verify recipients at RCPT time.
    pub verify: bool,
    pub transport: String,
    /// Address extension separator characters; empty: no extensions.
    pub extension_separator: String,
    pub driver: Driver,
}

/// The routing configuration.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// The file it came from (or `built-in defaults`).
    pub source: String,
    /// Domains delivered here; an address in one that no router accepts is unknown (5.1.1).
    pub local_domains: Vec<String>,
    /// The domain given to addresses without one (recipients and redirect targets).
    pub qualify_domain: String,
    pub max_depth: usize,
    pub max_addresses: usize,
    pub routers: Vec<RouterConfig>,
    pub transports: Vec<Transport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    routing: Option<RawRouting>,
    #[serde(default)]
    router: Vec<Spanned<RawRouter>>,
    #[serde(default)]
    transport: Vec<Spanned<RawTransport>>,
    // Retry rules, read by crate::retry.
    #[serde(default, rename = "retry")]
    _retry: Option<toml::Value>,
    // The daemon's sections of the same file (checked by cursusd's configuration).
    #[serde(default, rename = "hostname")]
    _hostname: Option<toml::Value>,
    #[serde(default, rename = "data_dir")]
    _data_dir: Option<toml::Value>,
    #[serde(default, rename = "user")]
    _user: Option<toml::Value>,
    #[serde(default, rename = "queue_lifetime_days")]
    _queue_lifetime_days: Option<toml::Value>,
    #[serde(default, rename = "smtp")]
    _smtp: Option<toml::Value>,
    #[serde(default, rename = "lmtp")]
    _lmtp: Option<toml::Value>,
    #[serde(default, rename = "lda")]
    _lda: Option<toml::Value>,
    #[serde(default, rename = "submission")]
    _submission: Option<toml::Value>,
    #[serde(default, rename = "tls")]
    _tls: Option<toml::Value>,
    #[serde(default, rename = "outbound")]
    _outbound: Option<toml::Value>,
    #[serde(default, rename = "bounce")]
    _bounce: Option<toml::Value>,
    #[serde(default, rename = "hints")]
    _hints: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    local_domains: Option<Vec<Spanned<String>>>,
    qualify_domain: Option<Spanned<String>>,
    max_depth: Option<Spanned<usize>>,
    max_addresses: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    name: Spanned<String>,
    driver: Spanned<String>,
    transport: Option<Spanned<String>>,
    verify: Option<bool>,
    domains: Option<Vec<Spanned<String>>>,
    local_parts: Option<Vec<Spanned<String>>>,
    senders: Option<Vec<Spanned<String>>>,
    extension_separator: Option<Spanned<String>>,
    // aliases
    file: Option<Spanned<String>>,
    optional: Option<Spanned<bool>>,
    user: Option<Spanned<String>>,
    // virtual
    table: Option<Spanned<RawTable>>,
    // manualroute
    hosts: Option<Spanned<Vec<String>>>,
    port: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    file: Option<String>,
    sqlite: Option<String>,
    query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransport {
    name: Spanned<String>,
    driver: Spanned<String>,
    mailbox: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<String>>>,
    port: Option<Spanned<u16>>,
}

struct Errors<'a> {
    text: &'a str,
    source: &'a str,
    found: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        self.found.push(ConfigError {
            source: self.source.to_string(),
            line: Some(line_col(self.text, span.start)),
            message: message.into(),
        });
    }

    fn line(&self, span: &std::ops::Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }
}

fn unknown(what: &str, word: &str, known: &[&str]) -> String {
    match suggest(word, known) {
        Some(s) => format!("unknown {what} `{word}`; did you mean `{s}`?"),
        None => format!("unknown {what} `{word}`; known: {}", known.join(", ")),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn from_toml(text: &str, source: &str) -> Result<RawFile, Vec<ConfigError>> {
    toml::from_str::<RawFile>(text).map_err(|e| {
        let line = e.span().map(|span| line_col(text, span.start));
        let mut message = e.message().trim().to_string();
        if let Some(word) = unknown_field(&message) {
            // serde lists the keys the table knows after "expected"; fall back to ours.
            let listed: Vec<&str> = message
                .split_once("expected")
                .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            let known: &[&str] = if listed.is_empty() { TOP_KEYS } else { &listed };
            message = unknown("key", &word, known);
        }
        vec![ConfigError {
            source: source.to_string(),
            line,
            message,
        }]
    })
}

fn patterns(list: Option<Vec<Spanned<String>>>, errors: &mut Errors<'_>) -> Option<PatternList> {
    let list = list?;
    let written: Vec<String> = list.iter().map(|s| s.get_ref().clone()).collect();
    match PatternList::parse(&written) {
        Ok(p) => Some(p),
        Err(bad) => {
            for (i, why) in bad {
                errors.at(list[i].span(), why);
            }
            None
        }
    }
}

/// Says that `option` does not apply to `driver` when it was given.
fn not_for<T>(option: &Option<Spanned<T>>, name: &str, driver: &str, errors: &mut Errors<'_>) {
    if let Some(o) = option {
        errors.at(
            o.span(),
            format!("`{name}` does not apply to a {driver} router"),
        );
    }
}

impl RoutingConfig {
    /// Parses and validates a configuration; `source` names the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<RoutingConfig, Vec<ConfigError>> {
        RoutingConfig::parse_with_host(text, source, &[])
    }

    /// As [`RoutingConfig::parse`], with the host's own names added to the local domains
    /// (as Postfix's `mydestination` holds `$myhostname`): mail to user@host is local
    /// whatever `local_domains` lists, so the host's own users, cron and bounces to local
    /// submitters are never routed away.
    pub fn parse_with_host(
        text: &str,
        source: &str,
        host_names: &[&str],
    ) -> Result<RoutingConfig, Vec<ConfigError>> {
        let raw = from_toml(text, source)?;
        let mut errors = Errors {
            text,
            source,
            found: Vec::new(),
        };
        let transports = transports(raw.transport, &mut errors);
        let mut config = RoutingConfig {
            source: source.to_string(),
            local_domains: vec!["localhost".into()],
            qualify_domain: String::new(),
            max_depth: DEFAULT_MAX_DEPTH,
            max_addresses: DEFAULT_MAX_ADDRESSES,
            routers: Vec::new(),
            transports,
        };
        if let Some(r) = raw.routing {
            if let Some(d) = r.local_domains {
                config.local_domains = d
                    .into_iter()
                    .map(|s| s.into_inner().to_lowercase())
                    .collect();
            }
            if let Some(q) = r.qualify_domain {
                if q.get_ref().is_empty() || q.get_ref().contains(['@', ' ']) {
                    errors.at(q.span(), "qualify_domain must be a domain");
                }
                config.qualify_domain = q.into_inner().to_lowercase();
            }
            for (value, slot) in [
                (r.max_depth, &mut config.max_depth),
                (r.max_addresses, &mut config.max_addresses),
            ] {
                if let Some(v) = value {
                    if *v.get_ref() == 0 {
                        errors.at(v.span(), "must be at least 1");
                    }
                    *slot = v.into_inner();
                }
            }
        }
        for host in host_names {
            let host = host.to_lowercase();
            if !host.is_empty() && !config.local_domains.contains(&host) {
                config.local_domains.push(host);
            }
        }
        if config.qualify_domain.is_empty() {
            config.qualify_domain = config
                .local_domains
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".into());
        }
        let mut names: Vec<String> = Vec::new();
        for raw in raw.router {
            let name = raw.get_ref().name.get_ref().clone();
            if names.contains(&name) {
                errors.at(
                    raw.get_ref().name.span(),
                    format!("a router named `{name}` is already defined"),
                );
            }
            names.push(name);
            if let Some(router) = router(raw, &config, &mut errors) {
                config.routers.push(router);
            }
        }
        if errors.found.is_empty() {
            Ok(config)
        } else {
            Err(errors.found)
        }
    }

    /// The configuration used when there is no file (single-user mode): an aliases router
    /// on /etc/aliases (skipped while the file does not exist), a localuser router for
    /// `localhost`, and the `local` transport delivering to `maildir:~/Maildir`.
    pub fn single_user() -> RoutingConfig {
        RoutingConfig::defaults("")
    }

    /// The default routing of system mode: [`RoutingConfig::single_user`]'s, with the
    /// users' own `~/.forward` files honoured between the aliases and the local users, as
    /// sendmail, Postfix and Exim do by default (read at delivery, not at RCPT time).
    pub fn system() -> RoutingConfig {
        RoutingConfig::defaults(
            r#"
[[router]]
name = "forward"
driver = "forward"
verify = false
"#,
        )
    }

    fn defaults(forward: &str) -> RoutingConfig {
        let text = format!(
            r#"[routing]
local_domains = ["localhost"]

[[router]]
name = "aliases"
driver = "aliases"
file = "/etc/aliases"
optional = true
{forward}
[[router]]
name = "localuser"
driver = "localuser"

[[transport]]
name = "{LOCAL_TRANSPORT}"
driver = "lda"
mailbox = "{DEFAULT_MAILBOX}"
"#
        );
        match RoutingConfig::parse(&text, "built-in defaults") {
            Ok(config) => config,
            // The text above is a constant checked by a test.
            Err(errors) => panic!("built-in routing defaults are invalid: {errors:?}"),
        }
    }

    pub fn transport(&self, name: &str) -> Option<&Transport> {
        self.transports.iter().find(|t| t.name == name)
    }
}

fn transports(raw: Vec<Spanned<RawTransport>>, errors: &mut Errors<'_>) -> Vec<Transport> {
    let mut out: Vec<Transport> = Vec::new();
    for raw in raw {
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        if !valid_name(&name) {
            errors.at(
                raw.name.span(),
                "a name is 1 to 64 letters, digits, `-` or `_`",
            );
        }
        if out.iter().any(|t| t.name == name) {
            errors.at(
                raw.name.span(),
                format!("a transport named `{name}` is already defined"),
            );
        }
        let driver = raw.driver.get_ref().as_str();
        let port = |default: u16| raw.port.as_ref().map_or(default, |p| *p.get_ref());
        let hosts = raw
            .hosts
            .as_ref()
            .map(|h| h.get_ref().clone())
            .unwrap_or_default();
        let built = match driver {
            "lda" => {
                not_for(&raw.hosts, "hosts", "lda transport", errors);
                not_for(&raw.port, "port", "lda transport", errors);
                let text = raw
                    .mailbox
                    .as_ref()
                    .map_or(DEFAULT_MAILBOX, |m| m.get_ref().as_str());
                match MailboxTemplate::parse(text) {
                    Ok(mailbox) => Some(TransportDriver::Lda { mailbox }),
                    Err(why) => {
                        let span = raw.mailbox.as_ref().map_or(raw.driver.span(), |m| m.span());
                        errors.at(span, why);
                        None
                    }
                }
            }
            "smtp" | "lmtp" => {
                not_for(
                    &raw.mailbox,
                    "mailbox",
                    &format!("{driver} transport"),
                    errors,
                );
                if let Some(h) = &raw.hosts
                    && h.get_ref()
                        .iter()
                        .any(|h| h.is_empty() || h.contains(char::is_whitespace))
                {
                    errors.at(h.span(), "a host is a name, an address or unix:/path");
                }
                if driver == "smtp" {
                    Some(TransportDriver::Smtp {
                        hosts,
                        port: port(25),
                    })
                } else {
                    if hosts.is_empty() {
                        errors.at(
                            raw.driver.span(),
                            "an lmtp transport needs `hosts` (a host or unix:/path)",
                        );
                    }
                    Some(TransportDriver::Lmtp {
                        hosts,
                        port: port(24),
                    })
                }
            }
            other => {
                errors.at(
                    raw.driver.span(),
                    unknown("transport driver", other, TRANSPORT_DRIVERS),
                );
                None
            }
        };
        if let Some(driver) = built {
            out.push(Transport { name, driver });
        }
    }
    out
}

fn router(
    raw: Spanned<RawRouter>,
    config: &RoutingConfig,
    errors: &mut Errors<'_>,
) -> Option<RouterConfig> {
    let line = errors.line(&raw.span());
    let raw = raw.into_inner();
    let before = errors.found.len();
    let name = raw.name.get_ref().clone();
    if !valid_name(&name) {
        errors.at(
            raw.name.span(),
            "a name is 1 to 64 letters, digits, `-` or `_`",
        );
    }
    let kind = raw.driver.get_ref().as_str();
    let options_for = |driver: &str, errors: &mut Errors<'_>| {
        if driver != "aliases" {
            not_for(&raw.file, "file", driver, errors);
            not_for(&raw.optional, "optional", driver, errors);
            not_for(&raw.user, "user", driver, errors);
        }
        if driver != "virtual" {
            not_for(&raw.table, "table", driver, errors);
        }
        if driver != "manualroute" {
            not_for(&raw.hosts, "hosts", driver, errors);
            not_for(&raw.port, "port", driver, errors);
        }
        if matches!(driver, "manualroute" | "dnslookup") {
            not_for(
                &raw.extension_separator,
                "extension_separator",
                driver,
                errors,
            );
        }
    };
    let driver = match kind {
        "aliases" => {
            options_for(kind, errors);
            let file = match &raw.file {
                Some(f) if f.get_ref().starts_with('/') => Some(PathBuf::from(f.get_ref())),
                Some(f) => {
                    errors.at(f.span(), "the aliases file must be an absolute path");
                    None
                }
                None => {
                    errors.at(raw.driver.span(), "an aliases router needs `file`");
                    None
                }
            };
            let user = raw
                .user
                .as_ref()
                .map_or(DEFAULT_ALIAS_USER.to_string(), |u| u.get_ref().clone());
            if let Some(u) = &raw.user
                && !crate::user::plausible_name(u.get_ref())
            {
                errors.at(u.span(), "not a valid user name");
            }
            file.map(|file| Driver::Aliases {
                file,
                optional: raw.optional.as_ref().is_some_and(|o| *o.get_ref()),
                user,
            })
        }
        "forward" => {
            options_for(kind, errors);
            Some(Driver::Forward)
        }
        "localuser" => {
            options_for(kind, errors);
            Some(Driver::LocalUser)
        }
        "virtual" => {
            options_for(kind, errors);
            match &raw.table {
                None => {
                    errors.at(raw.driver.span(), "a virtual router needs `table`");
                    None
                }
                Some(t) => {
                    let span = t.span();
                    let t = t.get_ref();
                    match (&t.file, &t.sqlite, &t.query) {
                        (Some(f), None, None) if f.starts_with('/') => Some(Driver::Virtual {
                            table: TableSpec::File(PathBuf::from(f)),
                        }),
                        (None, Some(db), Some(q)) if db.starts_with('/') => {
                            if q.matches('?').count() != 1 {
                                errors
                                    .at(span, "the query must have exactly one `?` (the address)");
                            }
                            Some(Driver::Virtual {
                                table: TableSpec::Sqlite {
                                    path: PathBuf::from(db),
                                    query: q.clone(),
                                },
                            })
                        }
                        _ => {
                            errors.at(
                                span,
                                "write the table as { file = \"/path\" } or \
                                 { sqlite = \"/path.db\", query = \"SELECT ... WHERE key = ?\" }",
                            );
                            None
                        }
                    }
                }
            }
        }
        "manualroute" => {
            options_for(kind, errors);
            match &raw.hosts {
                Some(h) if !h.get_ref().is_empty() => Some(Driver::ManualRoute {
                    hosts: h.get_ref().clone(),
                    port: raw.port.as_ref().map_or(25, |p| *p.get_ref()),
                }),
                _ => {
                    errors.at(raw.driver.span(), "a manualroute router needs `hosts`");
                    None
                }
            }
        }
        "dnslookup" => {
            options_for(kind, errors);
            Some(Driver::DnsLookup)
        }
        other => {
            errors.at(raw.driver.span(), unknown("router driver", other, DRIVERS));
            None
        }
    };

    let conditions = Conditions {
        domains: patterns(raw.domains, errors),
        local_parts: patterns(raw.local_parts, errors),
        senders: patterns(raw.senders, errors),
    };
    // Local drivers default to the local domains: an aliases router without `domains`
    // must not deliver root@elsewhere.example to the local root.
    let conditions = match (&driver, conditions.domains) {
        (Some(d), None) if !matches!(d, Driver::Virtual { .. }) && !d.remote() => Conditions {
            domains: PatternList::parse(&config.local_domains).ok(),
            ..conditions
        },
        (_, domains) => Conditions {
            domains,
            ..conditions
        },
    };

    let transport = transport_for(&raw.transport, driver.as_ref(), &raw.driver, config, errors);
    let extension_separator = raw
        .extension_separator
        .as_ref()
        .map_or(DEFAULT_SEPARATOR.to_string(), |s| s.get_ref().clone());
    if let Some(s) = &raw.extension_separator
        && s.get_ref()
            .contains(|c: char| c.is_alphanumeric() || c == '@' || c.is_whitespace())
    {
        errors.at(s.span(), "separators are punctuation such as `+` or `-`");
    }
    if errors.found.len() > before {
        return None;
    }
    Some(RouterConfig {
        name,
        line,
        conditions,
        verify: raw.verify.unwrap_or(true),
        transport: transport?,
        extension_separator,
        driver: driver?,
    })
}

/// The router's transport: the one named (it must exist and suit the driver) or the first
/// suitable one (`lda` for local drivers, `smtp`/`lmtp` for remote ones).
fn transport_for(
    named: &Option<Spanned<String>>,
    driver: Option<&Driver>,
    driver_span: &Spanned<String>,
    config: &RoutingConfig,
    errors: &mut Errors<'_>,
) -> Option<String> {
    let driver = driver?;
    let suits = |t: &Transport| match t.driver {
        TransportDriver::Lda { .. } => !driver.remote(),
        TransportDriver::Smtp { .. } | TransportDriver::Lmtp { .. } => {
            // File and command targets of aliases and .forward need the LDA.
            !driver.redirects()
        }
    };
    let why = if driver.remote() {
        "a remote router needs an smtp or lmtp transport"
    } else if driver.redirects() {
        "file and command targets are delivered by an lda transport"
    } else {
        ""
    };
    match named {
        Some(n) => {
            let Some(t) = config.transport(n.get_ref()) else {
                let names: Vec<&str> = config.transports.iter().map(|t| t.name.as_str()).collect();
                errors.at(n.span(), unknown("transport", n.get_ref(), &names));
                return None;
            };
            if !suits(t) {
                errors.at(
                    n.span(),
                    format!("transport `{}` is {}: {why}", t.name, t.driver.name()),
                );
                return None;
            }
            Some(t.name.clone())
        }
        None => match config.transports.iter().find(|t| suits(t)) {
            Some(t) => Some(t.name.clone()),
            None => {
                let want = if driver.remote() {
                    "smtp or lmtp"
                } else {
                    "lda"
                };
                errors.at(
                    driver_span.span(),
                    format!("no {want} transport is defined; add a [[transport]] and name it with `transport =`"),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests;
