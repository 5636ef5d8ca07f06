//! Where mail for a domain goes: MX lookup with hickory-resolver, RFC 5321 §5.1 order
//! (lowest preference first, random among equal preferences), the domain's own A/AAAA
//! records when it has no MX (the implicit MX), and the null MX of RFC 7505 (`MX 0 .`),
//! which fails the recipients at once with 5.1.10. Host lists from routers and transports
//! (names, IP literals, `unix:/path` for LMTP) are resolved here too.
//!
//! Trusts the configured resolver's answers (no DNSSEC). Fails with outcomes: a domain that
//! does not exist or has no address is permanent (5.1.2, 5.4.4); a resolver that times out
//! or answers SERVFAIL is temporary (4.4.3), so a DNS outage never bounces mail.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cursus_mail::{EnhancedStatus, ExitCode, Outcome};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// One place to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{}:{}", a.ip(), a.port()),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A host to try, with its addresses in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The name (for TLS SNI/verification, AUTH credentials and the log).
    pub name: String,
    pub addresses: Vec<Address>,
    /// The domain had no MX: this is the domain itself (RFC 5321 §5.1 implicit MX).
    pub implicit_mx: bool,
}

/// The DNS side of outbound delivery.
pub struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

fn temporary(text: String) -> Outcome {
    Outcome::temporary(EnhancedStatus::new(4, 4, 3), text)
}

fn permanent(status: EnhancedStatus, text: String) -> Outcome {
    Outcome::permanent(status, ExitCode::NoUser, text)
}

impl Dns {
    /// A resolver asking `server` (IP:PORT over UDP, then TCP), or the system's.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Dns, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| format!("resolver: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        let resolver = builder.build().map_err(|e| format!("resolver: {e}"))?;
        Ok(Dns { resolver })
    }

    /// The hosts for mail to `domain`, in the order to try them. `me` is this host's name:
    /// when it is one of the MX hosts, only the more preferred ones are used (RFC 5321
    /// §5.1), and none left means the mail would loop (5.4.6).
    pub async fn mx_hosts(&self, domain: &str, port: u16, me: &str) -> Result<Vec<Host>, Outcome> {
        let fqdn = absolute(domain);
        let records = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) if e.is_nx_domain() => {
                return Err(permanent(
                    EnhancedStatus::new(5, 1, 2),
                    format!("the domain {domain} does not exist (NXDOMAIN)"),
                ));
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(temporary(format!("MX lookup for {domain} failed: {e}"))),
        };
        if records
            .iter()
            .any(|(_, name)| name == "." || name.is_empty())
        {
            return Err(permanent(
                EnhancedStatus::new(5, 1, 10),
                format!("the domain {domain} accepts no mail (null MX, RFC 7505)"),
            ));
        }
        if records.is_empty() {
            // No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
            return match self.addresses(domain, port).await {
                Ok(addresses) => Ok(vec![Host {
                    name: domain.to_string(),
                    addresses,
                    implicit_mx: true,
                }]),
                Err(e) => Err(e),
            };
        }
        let records = below_me(records, me);
        if records.is_empty() {
            return Err(Outcome::permanent(
                cursus_mail::codes::ROUTING_LOOP,
                ExitCode::Config,
                format!("mail for {domain} loops back to myself ({me} is its best MX host)"),
            ));
        }
        let mut hosts = Vec::new();
        let mut last = None;
        for name in order(records, random_below) {
            let name = name.trim_end_matches('.').to_string();
            match self.addresses(&name, port).await {
                Ok(addresses) => hosts.push(Host {
                    name,
                    addresses,
                    implicit_mx: false,
                }),
                Err(o) => {
                    // A temporary failure anywhere keeps the whole lookup temporary.
                    if last
                        .as_ref()
                        .is_none_or(|l: &Outcome| l.kind != cursus_mail::OutcomeKind::Temporary)
                    {
                        last = Some(o);
                    }
                }
            }
        }
        if hosts.is_empty() {
            return Err(last.unwrap_or_else(|| {
                permanent(
                    EnhancedStatus::new(5, 4, 4),
                    format!("no MX host of {domain} has an address"),
                )
            }));
        }
        Ok(hosts)
    }

    /// The hosts of a list from a router or transport.
    pub async fn listed_hosts(&self, names: &[String], port: u16) -> Result<Vec<Host>, Outcome> {
        let mut hosts = Vec::new();
        let mut last = None;
        for name in names {
            if let Some(path) = name.strip_prefix("unix:") {
                hosts.push(Host {
                    name: name.clone(),
                    addresses: vec![Address::Unix(PathBuf::from(path))],
                    implicit_mx: false,
                });
                continue;
            }
            let (host, port) = split_port(name, port);
            match self.addresses(host, port).await {
                Ok(addresses) => hosts.push(Host {
                    name: host.to_string(),
                    addresses,
                    implicit_mx: false,
                }),
                Err(o) => last = Some(o),
            }
        }
        if hosts.is_empty() {
            return Err(last.unwrap_or_else(|| {
                permanent(
                    EnhancedStatus::new(5, 4, 4),
                    "no host to deliver to".to_string(),
                )
            }));
        }
        Ok(hosts)
    }

    /// A host name's addresses (an IP literal is its own address).
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<Address>, Outcome> {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![Address::Tcp(SocketAddr::new(ip, port))]);
        }
        match self.resolver.lookup_ip(absolute(name).as_str()).await {
            Ok(ips) => {
                let list: Vec<Address> = ips
                    .iter()
                    .map(|ip| Address::Tcp(SocketAddr::new(ip, port)))
                    .collect();
                if list.is_empty() {
                    Err(no_address(name))
                } else {
                    Ok(list)
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(no_address(name)),
            Err(e) => Err(temporary(format!(
                "address lookup for {name} failed: {}",
                brief(&e)
            ))),
        }
    }
}

fn no_address(name: &str) -> Outcome {
    permanent(
        EnhancedStatus::new(5, 4, 4),
        format!("the host {name} has no address (no A or AAAA record)"),
    )
}

fn brief(e: &NetError) -> String {
    e.to_string()
}

/// `name.` (no search domains).
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// `host:port` in a host list overrides the port (IPv6 literals in brackets).
fn split_port(name: &str, default: u16) -> (&str, u16) {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default);
        return (host, port);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, p),
            Err(_) => (name, default),
        },
        _ => (name, default),
    }
}

/// RFC 5321 §5.1: when this host (`me`) is an MX host of the domain, only the records
/// with a lower preference value than its own are candidates.
pub fn below_me(records: Vec<(u16, String)>, me: &str) -> Vec<(u16, String)> {
    let me = me.trim_end_matches('.');
    let same = |name: &str| name.trim_end_matches('.').eq_ignore_ascii_case(me);
    match records
        .iter()
        .filter(|(_, n)| same(n))
        .map(|(p, _)| *p)
        .min()
    {
        None => records,
        Some(mine) => records.into_iter().filter(|(p, _)| *p < mine).collect(),
    }
}

/// RFC 5321 §5.1: by preference, lowest first; shuffled among equal preferences.
pub fn order(
    mut records: Vec<(u16, String)>,
    mut random_below: impl FnMut(usize) -> usize,
) -> Vec<String> {
    records.sort_by_key(|(p, _)| *p);
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let pref = records[i].0;
        let mut j = i;
        while j < records.len() && records[j].0 == pref {
            j += 1;
        }
        let group = &mut records[i..j];
        // Fisher-Yates.
        for k in (1..group.len()).rev() {
            let r = random_below(k + 1);
            group.swap(k, r);
        }
        out.extend(group.iter().map(|(_, n)| n.clone()));
        i = j;
    }
    out
}

fn random_below(n: usize) -> usize {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0;
    }
    (u32::from_le_bytes(b) as usize) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    #[test]
    fn lower_preference_first_and_every_order_of_equals_occurs() {
        let r = recs(&[(20, "c"), (10, "a"), (10, "b"), (30, "d")]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let o = order(r.clone(), random_below);
            assert_eq!(o[2..], ["c".to_string(), "d".to_string()]);
            seen.insert(o[..2].to_vec());
        }
        assert_eq!(seen.len(), 2, "both orders of the two preference-10 hosts");
        // Deterministic with a fixed source.
        assert_eq!(order(r, |_| 0), vec!["b", "a", "c", "d"]);
    }

    #[test]
    fn our_own_name_cuts_the_list() {
        let r = recs(&[(10, "a.example."), (20, "me.example."), (30, "c.example.")]);
        assert_eq!(
            below_me(r.clone(), "ME.example"),
            recs(&[(10, "a.example.")])
        );
        assert_eq!(below_me(r.clone(), "other.example"), r);
        assert!(below_me(recs(&[(10, "me.example.")]), "me.example").is_empty());
    }

    #[test]
    fn host_lists_may_carry_ports() {
        assert_eq!(split_port("relay.example:587", 25), ("relay.example", 587));
        assert_eq!(split_port("relay.example", 25), ("relay.example", 25));
        assert_eq!(split_port("[::1]:2525", 25), ("::1", 2525));
        assert_eq!(split_port("::1", 25), ("::1", 25));
        assert_eq!(split_port("127.0.0.1:26", 25), ("127.0.0.1", 26));
    }
}
