//! The hints that would change a retry decision, in words: what `cursus retry test`
//! prints after the rule, from the daemon's file opened read-only and the same verdict
//! functions the daemon uses (decision.rs).
//!
//! Trusts the file only to be a hints database; a file that is not one is an error for
//! the caller to print. Writes nothing.

use std::path::Path;

use cursus_route::retry::{ErrorClass, format_duration};

use super::decision::{self, Settings};
use super::store::Store;

/// What the hints file at `path` says about `address` (and its domain and hosts) that
/// would change the decision for a failure of `class` of a message received `now`: one
/// line each, for `cursus retry test`.
pub fn explain(
    path: &Path,
    settings: &Settings,
    address: &str,
    class: ErrorClass,
    now: i64,
) -> Result<Vec<String>, String> {
    let store = Store::open_read_only(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let address = address.to_lowercase();
    let domain = address
        .rsplit_once('@')
        .map_or(address.as_str(), |(_, d)| d)
        .to_string();
    let ago = |t: i64| format_duration(u64::try_from(now.saturating_sub(t)).unwrap_or(0));
    let mut out = Vec::new();
    let row = store.address(&address).map_err(err)?;
    if let Some(r) = &row {
        if let Some(t) = r.timeout_bounce {
            let verdict =
                decision::after_timeout_bounce(Some(r), class, now, settings.timeout_bounce_memory);
            out.push(format!(
                "address {address}: bounced after timing out {} ago; a {class} failure now {}",
                ago(t),
                if verdict.is_some() {
                    "bounces at once (until a delivery there succeeds)"
                } else {
                    "follows the rule (the hint does not apply to it)"
                }
            ));
        }
        if let Some(t) = r.mailbox_read {
            let verdict = decision::quota_unread(Some(t), class, now, settings.quota_unread);
            out.push(format!(
                "address {address}: mailbox last read {} ago{}",
                ago(t),
                match (class, verdict) {
                    (ErrorClass::Quota, Some(_)) => "; over quota now bounces at once",
                    (ErrorClass::Quota, None) => "; over quota is deferred by the rule",
                    _ => "",
                }
            ));
        }
    }
    if let Some(d) = store.domain(&domain).map_err(err)?
        && let Some(since) = d.refused_since
    {
        out.push(format!(
            "domain {domain}: {} connections refused for {}; {}",
            if d.no_mx {
                "no MX (address records only),"
            } else {
                "has MX hosts,"
            },
            ago(since),
            if d.no_mx && class == ErrorClass::Refused && settings.no_mx_refused_lifetime > 0 {
                format!(
                    "a message whose every attempt was refused bounces {} after arrival",
                    format_duration(settings.no_mx_refused_lifetime)
                )
            } else {
                "the rule decides".to_string()
            }
        ));
    }
    for h in store.hosts_of(&domain).map_err(err)? {
        if decision::use_helo(Some(&h), now, settings.helo_memory) {
            out.push(format!(
                "host {}: failed EHLO {} ago; greeted with HELO",
                h.name,
                ago(h.helo_only_since.unwrap_or(now))
            ));
        }
    }
    Ok(out)
}
