//! What the hints change about a delivery, as pure functions of the rows, the failure and
//! the time (Unix seconds): bounce now instead of waiting, retry a full mailbox someone
//! reads instead of bouncing, or greet with HELO. No clock, no I/O: the tests give the
//! time, and `cursus retry test` prints the same verdicts.
//!
//! Trusts the rows only as hints: each verdict also needs the present failure to be of the
//! kind the hint is about (a refused connection, a timeout, over quota), so an old or
//! wrong row can at worst bounce a message that is failing anyway, or retry a full mailbox
//! until the retry rule's lifetime; never lose one that would be delivered now.

use cursus_route::retry::{ErrorClass, format_duration};

use super::store::{AddressRow, DomainRow, HostRow};

/// The tunables of `[hints]`, in seconds (0 turns a behaviour off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// How often the tidy task runs.
    pub tidy_interval: u64,
    /// Rows not updated for this long are removed.
    pub keep: u64,
    /// A domain without MX whose every connection was refused bounces after this.
    pub no_mx_refused_lifetime: u64,
    /// An address that bounced after timing out bounces at once for this long.
    pub timeout_bounce_memory: u64,
    /// A host that failed EHLO is greeted with HELO for this long.
    pub helo_memory: u64,
    /// Over quota and the mailbox not read for this long: bounce.
    pub quota_unread: u64,
    /// When a message reaches a destination, start the others waiting for it.
    pub start_waiting: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            tidy_interval: 3600,
            keep: 30 * 86_400,
            no_mx_refused_lifetime: 2 * 3600,
            timeout_bounce_memory: 86_400,
            helo_memory: 7 * 86_400,
            quota_unread: 7 * 86_400,
            start_waiting: true,
        }
    }
}

/// A message that arrived this long before a refusal run began may still have had all its
/// attempts refused: its first attempt happens within moments of arrival.
pub const FIRST_ATTEMPT_GRACE: i64 = 60;

fn secs(n: i64) -> String {
    format_duration(u64::try_from(n.max(0)).unwrap_or(0))
}

/// Bounce at once: the address bounced after timing out `memory` seconds ago or less, and
/// nothing was delivered there since; the present failure is a timeout or a refusal.
pub fn after_timeout_bounce(
    row: Option<&AddressRow>,
    class: ErrorClass,
    now: i64,
    memory: u64,
) -> Option<String> {
    let at = row?.timeout_bounce?;
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);
    if memory == 0 || now.saturating_sub(at) > memory {
        return None;
    }
    if !matches!(class, ErrorClass::Timeout | ErrorClass::Refused) {
        return None;
    }
    Some(format!(
        "mail to this address bounced after timing out {} ago and nothing was delivered there since; not retried",
        secs(now.saturating_sub(at))
    ))
}

/// Give up early: the domain has no MX (its address records stand in), every connection
/// made for this message was refused (the run of refusals began at or before its first
/// attempt), and the message is older than `lifetime`.
pub fn no_mx_refused(
    row: Option<&DomainRow>,
    class: ErrorClass,
    received: i64,
    now: i64,
    lifetime: u64,
) -> Option<String> {
    let row = row?;
    let since = row.refused_since?;
    let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
    if lifetime == 0 || !row.no_mx || class != ErrorClass::Refused {
        return None;
    }
    if since > received.saturating_add(FIRST_ATTEMPT_GRACE) {
        return None;
    }
    if now.saturating_sub(received) < lifetime {
        return None;
    }
    Some(format!(
        "{} has no MX and every connection to its address records was refused for {}; given up",
        row.name,
        secs(now.saturating_sub(since.min(received)))
    ))
}

/// Over quota and unread: the mailbox was last read (`read`) more than `unread` seconds
/// ago. Unknown (`None`): the retry rule decides alone.
pub fn quota_unread(read: Option<i64>, class: ErrorClass, now: i64, unread: u64) -> Option<String> {
    let read = read?;
    let unread = i64::try_from(unread).unwrap_or(i64::MAX);
    if unread == 0 || class != ErrorClass::Quota || now.saturating_sub(read) < unread {
        return None;
    }
    Some(format!(
        "the mailbox is full and has not been read for {}",
        secs(now.saturating_sub(read))
    ))
}

/// Over quota while read: the mailbox was read (`read`) less than `unread` seconds ago,
/// so its owner is presumably making room and the delivery is worth retrying. Unknown
/// (`None`): no verdict.
pub fn quota_read(read: Option<i64>, now: i64, unread: u64) -> Option<String> {
    let read = read?;
    let unread = i64::try_from(unread).unwrap_or(i64::MAX);
    if unread == 0 || now.saturating_sub(read) >= unread {
        return None;
    }
    Some(format!(
        "the mailbox is being read (last {} ago), so delivery is retried",
        secs(now.saturating_sub(read))
    ))
}

/// Whether to greet `host` with HELO: it failed EHLO less than `memory` seconds ago.
pub fn use_helo(row: Option<&HostRow>, now: i64, memory: u64) -> bool {
    let Some(since) = row.and_then(|r| r.helo_only_since) else {
        return false;
    };
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);
    memory > 0 && now.saturating_sub(since) < memory
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    #[test]
    fn a_recent_timeout_bounce_bounces_timeouts_and_refusals_at_once() {
        let row = AddressRow {
            address: "joe@slow.example".into(),
            timeout_bounce: Some(1000),
            ..AddressRow::default()
        };
        // Clock: 1 hour after the bounce, memory 1 day.
        let now = 1000 + HOUR;
        assert!(after_timeout_bounce(Some(&row), ErrorClass::Timeout, now, 86_400).is_some());
        assert!(after_timeout_bounce(Some(&row), ErrorClass::Refused, now, 86_400).is_some());
        // Greylisting is not what the hint is about.
        assert!(after_timeout_bounce(Some(&row), ErrorClass::Rcpt, now, 86_400).is_none());
        // Past the memory, or turned off, or delivered since (the row is cleared).
        assert!(
            after_timeout_bounce(Some(&row), ErrorClass::Timeout, 1000 + DAY + 1, 86_400).is_none()
        );
        assert!(after_timeout_bounce(Some(&row), ErrorClass::Timeout, now, 0).is_none());
        let delivered = AddressRow {
            timeout_bounce: None,
            last_delivered: Some(now),
            ..row
        };
        assert!(after_timeout_bounce(Some(&delivered), ErrorClass::Timeout, now, 86_400).is_none());
        assert!(after_timeout_bounce(None, ErrorClass::Timeout, now, 86_400).is_none());
    }

    #[test]
    fn no_mx_and_always_refused_gives_up_after_the_shorter_lifetime() {
        let row = DomainRow {
            name: "nomx.example".into(),
            no_mx: true,
            refused_since: Some(10_000),
            updated: 10_000,
        };
        let lifetime = 2 * 3600;
        // Arrived at 10_000, refused since then: kept until 2 h, then given up.
        let received = 10_000;
        assert!(
            no_mx_refused(
                Some(&row),
                ErrorClass::Refused,
                received,
                received + HOUR,
                lifetime
            )
            .is_none()
        );
        let why = no_mx_refused(
            Some(&row),
            ErrorClass::Refused,
            received,
            received + 2 * HOUR,
            lifetime,
        )
        .expect("gives up");
        assert!(why.contains("nomx.example has no MX"), "{why}");
        // Arrived before the run began (an attempt before it was answered): not every
        // attempt was refused.
        assert!(
            no_mx_refused(
                Some(&row),
                ErrorClass::Refused,
                10_000 - HOUR,
                10_000 + 3 * HOUR,
                lifetime
            )
            .is_none()
        );
        // The first attempt a few seconds after arrival counts.
        assert!(
            no_mx_refused(
                Some(&row),
                ErrorClass::Refused,
                10_000 - 5,
                10_000 + 3 * HOUR,
                lifetime
            )
            .is_some()
        );
        // A domain with MX, another class, or the behaviour off: the rule decides.
        let mx = DomainRow {
            no_mx: false,
            ..row.clone()
        };
        assert!(
            no_mx_refused(
                Some(&mx),
                ErrorClass::Refused,
                received,
                received + DAY,
                lifetime
            )
            .is_none()
        );
        assert!(
            no_mx_refused(
                Some(&row),
                ErrorClass::Timeout,
                received,
                received + DAY,
                lifetime
            )
            .is_none()
        );
        assert!(
            no_mx_refused(Some(&row), ErrorClass::Refused, received, received + DAY, 0).is_none()
        );
    }

    #[test]
    fn over_quota_bounces_only_when_the_mailbox_is_not_read() {
        let week = 7 * 86_400;
        let now = 100 * DAY;
        assert!(quota_unread(Some(now - HOUR), ErrorClass::Quota, now, week).is_none());
        let why = quota_unread(Some(now - 8 * DAY), ErrorClass::Quota, now, week).expect("bounce");
        assert!(why.contains("not been read for 8d"), "{why}");
        // Not observed: no verdict.
        assert!(quota_unread(None, ErrorClass::Quota, now, week).is_none());
        assert!(quota_unread(Some(0), ErrorClass::Home, now, week).is_none());
        assert!(quota_unread(Some(0), ErrorClass::Quota, now, 0).is_none());
        // The other side of the same line.
        let why = quota_read(Some(now - HOUR), now, week).expect("read");
        assert!(why.contains("being read (last 1h ago)"), "{why}");
        assert!(quota_read(Some(now - 8 * DAY), now, week).is_none());
        assert!(quota_read(None, now, week).is_none());
        assert!(quota_read(Some(now), now, 0).is_none());
    }

    #[test]
    fn helo_is_used_while_the_failure_is_remembered() {
        let row = HostRow {
            name: "old.example".into(),
            helo_only_since: Some(1000),
            ..HostRow::default()
        };
        assert!(use_helo(Some(&row), 1000 + HOUR, 86_400));
        assert!(!use_helo(Some(&row), 1000 + DAY, 86_400));
        assert!(!use_helo(Some(&row), 1000 + HOUR, 0));
        assert!(!use_helo(None, 0, 86_400));
    }
}
