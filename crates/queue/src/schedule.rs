//! The default retry schedule: when a deferred recipient is tried again, and when it expires.
//!
//! A placeholder for the retry rules of the routing crate, which will pass their own
//! decision in; until then: 5 min, 15 min, 30 min, 1 h after the first, second, third and
//! fourth failure, then every 2 h, and 5 days after arrival the recipient fails with 5.4.7.
//! Pure arithmetic, no I/O, cannot fail. The last attempt is never scheduled past the
//! expiry time, so a message expires on time rather than up to 2 h late.

use cursus_mail::Outcome;
use jiff::{SignedDuration, Timestamp};

use crate::envelope::Envelope;

/// Decides when a recipient that failed temporarily is tried again: the daemon's retry
/// rules (per address, error and sender) plug in here; without them the queue uses its
/// [`Schedule`]. Must be pure (no I/O): it runs under the message's journal lock.
pub trait RetryPolicy: Send + Sync {
    /// After the `attempts`-th temporary failure (`outcome`) of recipient `recipient` of
    /// the message with `envelope`, at `now`: the next attempt, or `None` to give up (the
    /// recipient then fails with 5.4.7 and the last error).
    fn next_attempt(
        &self,
        envelope: &Envelope,
        recipient: usize,
        outcome: &Outcome,
        attempts: u32,
        now: Timestamp,
    ) -> Option<Timestamp>;
}

/// Retry intervals and the queue lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The wait after the 1st, 2nd, ... failure.
    pub intervals: Vec<SignedDuration>,
    /// The wait after every later failure.
    pub then_every: SignedDuration,
    /// How long after arrival a recipient that keeps failing temporarily is given up.
    pub expire_after: SignedDuration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            intervals: vec![
                SignedDuration::from_mins(5),
                SignedDuration::from_mins(15),
                SignedDuration::from_mins(30),
                SignedDuration::from_hours(1),
            ],
            then_every: SignedDuration::from_hours(2),
            expire_after: SignedDuration::from_hours(5 * 24),
        }
    }
}

impl Schedule {
    /// After the `attempts`-th temporary failure at `now` of a message received at
    /// `received`: the next attempt, or `None` when the recipient has expired.
    pub fn next_attempt(
        &self,
        received: Timestamp,
        attempts: u32,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let expiry = received.saturating_add(self.expire_after).ok()?;
        if now >= expiry {
            return None;
        }
        let wait = attempts
            .checked_sub(1)
            .and_then(|i| self.intervals.get(i as usize))
            .copied()
            .unwrap_or(self.then_every);
        let next = now.saturating_add(wait).ok()?;
        Some(next.min(expiry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule() {
        let s = Schedule::default();
        let t0 = Timestamp::from_second(1_700_000_000).expect("valid time");
        let mins = |m: i64| {
            t0.saturating_add(SignedDuration::from_mins(m))
                .expect("in range")
        };
        let table: &[(u32, i64, Option<i64>)] = &[
            (1, 0, Some(5)),
            (2, 5, Some(20)),
            (3, 20, Some(50)),
            (4, 50, Some(110)),
            (5, 110, Some(230)),
            (40, 1000, Some(1120)),
            // The last attempt lands exactly on the expiry, then the recipient expires.
            (60, 5 * 24 * 60 - 30, Some(5 * 24 * 60)),
            (61, 5 * 24 * 60, None),
            (1, 6 * 24 * 60, None),
        ];
        for &(attempts, now, want) in table {
            assert_eq!(
                s.next_attempt(t0, attempts, mins(now)),
                want.map(mins),
                "attempt {attempts} at +{now} min"
            );
        }
    }
}
