//! cursus-route's routers behind the daemon's [`Routes`] trait, and the `.forward` source
//! that asks cursus-lda to read a user's .forward as that user (the daemon never reads
//! users' files itself when an LDA service is in use).
//!
//! Trusts the routers' results and the LDA's answers. Never fails: routing problems are
//! outcomes (temporary when a lookup failed, permanent when the routers say so).

use std::path::PathBuf;

use cursus_lda::client::Client;
use cursus_lda::protocol::{Answer, ForwardEntry, Request};
use cursus_mail::{ExitCode, Outcome, OutcomeKind, Sender};
use cursus_route::forward::ForwardSource;
use cursus_route::routed::{Failure, Remote, Target};
use cursus_route::{Router, TempError, TransportDriver, User};

use crate::routing::{NextHop, Routed, Routes, Verified};

/// The routers of the configuration.
pub struct Routing(pub Router);

fn failure_outcome(f: &Failure) -> Outcome {
    match f.kind {
        OutcomeKind::Temporary => Outcome::temporary(f.status, f.reason.clone()),
        _ => {
            let exit = if f.status.to_string().starts_with("5.1.") {
                ExitCode::NoUser
            } else {
                ExitCode::NoPerm
            };
            Outcome::permanent(f.status, exit, f.reason.clone())
        }
    }
}

impl Routes for Routing {
    fn verify(&self, recipient: &str, sender: &Sender) -> Verified {
        let routed = self.0.verify(recipient, sender);
        if let Some(f) = routed
            .failures
            .iter()
            .find(|f| f.kind == OutcomeKind::Temporary)
        {
            return Verified::Deferred(failure_outcome(f));
        }
        if routed.deliveries.is_empty() {
            return match routed.failures.first() {
                Some(f) => Verified::Refused(failure_outcome(f)),
                // Verification routers declined without a failure: let delivery decide.
                None => Verified::Local,
            };
        }
        if routed
            .deliveries
            .iter()
            .all(|d| matches!(d.target, Target::Remote(_)))
        {
            Verified::Remote
        } else {
            Verified::Local
        }
    }

    fn in_local_domain(&self, recipient: &str) -> bool {
        self.0.in_local_domain(recipient)
    }

    fn routes_domain(&self, recipient: &str) -> bool {
        self.0.routes_domain(recipient)
    }

    fn route(&self, recipient: &str, sender: &Sender) -> Result<Vec<Routed>, Outcome> {
        let routed = self.0.route(recipient, sender);
        let mut out = Vec::new();
        for d in routed.deliveries {
            out.push(match d.target {
                Target::Local {
                    user, destination, ..
                } => Routed::Local {
                    address: d.address,
                    user,
                    destination,
                    extension: d.extension,
                    router: d.router,
                    transport: d.transport,
                },
                Target::Remote(remote) => {
                    let next_hop = self.next_hop(&d.transport, remote);
                    Routed::Remote {
                        address: d.address,
                        router: d.router,
                        transport: d.transport,
                        next_hop,
                    }
                }
            });
        }
        for f in &routed.failures {
            out.push(Routed::Failed {
                address: f.address.clone(),
                router: f
                    .chain
                    .last()
                    .map(|h| h.router.clone())
                    .unwrap_or_else(|| "-".to_string()),
                outcome: failure_outcome(f),
            });
        }
        Ok(out)
    }
}

impl Routing {
    /// The next hop of a remote delivery: the router's hosts, else the transport's, else
    /// the MX hosts of the domain; the transport says SMTP or LMTP and the port.
    fn next_hop(&self, transport: &str, remote: Remote) -> NextHop {
        let (lmtp, transport_hosts, transport_port) =
            match self.0.config().transport(transport).map(|t| &t.driver) {
                Some(TransportDriver::Lmtp { hosts, port }) => (true, hosts.clone(), *port),
                Some(TransportDriver::Smtp { hosts, port }) => (false, hosts.clone(), *port),
                _ => (false, Vec::new(), 25),
            };
        // With hosts the domain plays no part: recipients of several domains relayed to the
        // same hosts share one transaction.
        match remote {
            Remote::Hosts { hosts, port } => NextHop {
                lmtp,
                hosts,
                port,
                domain: String::new(),
            },
            Remote::Mx { .. } if !transport_hosts.is_empty() => NextHop {
                lmtp,
                hosts: transport_hosts,
                port: transport_port,
                domain: String::new(),
            },
            Remote::Mx { domain } => NextHop {
                lmtp,
                hosts: Vec::new(),
                port: transport_port,
                domain: domain.to_ascii_lowercase(),
            },
        }
    }
}

/// Reads .forward files through cursus-lda's `read-forward` request, as the user.
pub struct LdaForwards {
    pub socket: PathBuf,
}

impl ForwardSource for LdaForwards {
    fn forward(&self, user: &User) -> Result<Vec<ForwardEntry>, TempError> {
        let mut client = Client::connect(&self.socket)
            .map_err(|e| TempError::new(format!("cursus-lda: {e}")))?;
        match client.call(
            &Request::ReadForward {
                user: user.name.clone(),
            },
            None,
        ) {
            Ok(Answer::Forward { entries }) => Ok(entries),
            // An unsafe .forward is ignored, as sendmail and Postfix do.
            Ok(Answer::Error { .. }) => Ok(Vec::new()),
            Ok(Answer::Outcome { text, .. }) => Err(TempError::new(text)),
            Ok(other) => Err(TempError::new(format!("unexpected answer {other:?}"))),
            Err(e) => Err(TempError::new(e.to_string())),
        }
    }
}
