//! Which RFC 5321 §4.5.3.2 timeout applies to what a session is waiting for.
//!
//! Trusts: nothing; this is a table. The daemon owns the clocks (the crate has no I/O); the
//! session only says which wait it is in, so that a slow or silent client (slowloris) is cut
//! off after the time the RFC allows and not later. [`Timeouts`] holds the durations a
//! configuration may change (the RFC's by default).

use std::time::Duration;

/// A wait named after RFC 5321 §4.5.3.2. Most are waits for the client; `DataInitiation`
/// and `DataTermination` are also the budget the daemon has to answer `DATA` (the client
/// waits 2 minutes for 354) and the end of the message (the client waits 10 minutes for the
/// final reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// §4.5.3.2.1: before the greeting and until HELO/EHLO/LHLO; 5 minutes.
    Initial,
    /// §4.5.3.2.2: waiting for MAIL (or for the daemon's answer to it); 5 minutes.
    Mail,
    /// §4.5.3.2.3: in a transaction, waiting for RCPT, DATA or BDAT; 5 minutes.
    Rcpt,
    /// §4.5.3.2.4: the daemon has `DATA` to answer (354 or a refusal); 2 minutes.
    DataInitiation,
    /// §4.5.3.2.5: reading message content (DATA lines or a BDAT chunk); 3 minutes between
    /// reads.
    DataBlock,
    /// §4.5.3.2.6: the message is complete and the daemon owes the final reply; 10 minutes.
    DataTermination,
}

impl Timeout {
    pub const fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Timeout::Initial | Timeout::Mail | Timeout::Rcpt => 5 * 60,
            Timeout::DataInitiation => 2 * 60,
            Timeout::DataBlock => 3 * 60,
            Timeout::DataTermination => 10 * 60,
        })
    }

    /// The RFC section that sets it.
    pub const fn section(self) -> &'static str {
        match self {
            Timeout::Initial => "RFC 5321 4.5.3.2.1",
            Timeout::Mail => "RFC 5321 4.5.3.2.2",
            Timeout::Rcpt => "RFC 5321 4.5.3.2.3",
            Timeout::DataInitiation => "RFC 5321 4.5.3.2.4",
            Timeout::DataBlock => "RFC 5321 4.5.3.2.5",
            Timeout::DataTermination => "RFC 5321 4.5.3.2.6",
        }
    }
}

/// A duration for each [`Timeout`]: the RFC's ([`Timeouts::default`]) or configured ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub initial: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_initiation: Duration,
    pub data_block: Duration,
    pub data_termination: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            initial: Timeout::Initial.duration(),
            mail: Timeout::Mail.duration(),
            rcpt: Timeout::Rcpt.duration(),
            data_initiation: Timeout::DataInitiation.duration(),
            data_block: Timeout::DataBlock.duration(),
            data_termination: Timeout::DataTermination.duration(),
        }
    }
}

impl Timeouts {
    /// The duration of the wait `t`.
    pub const fn get(&self, t: Timeout) -> Duration {
        match t {
            Timeout::Initial => self.initial,
            Timeout::Mail => self.mail,
            Timeout::Rcpt => self.rcpt,
            Timeout::DataInitiation => self.data_initiation,
            Timeout::DataBlock => self.data_block,
            Timeout::DataTermination => self.data_termination,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_is_the_rfc_and_each_entry_can_be_changed() {
        let all = [
            Timeout::Initial,
            Timeout::Mail,
            Timeout::Rcpt,
            Timeout::DataInitiation,
            Timeout::DataBlock,
            Timeout::DataTermination,
        ];
        let rfc = Timeouts::default();
        for t in all {
            assert_eq!(rfc.get(t), t.duration(), "{t:?}");
        }
        let mut short = rfc;
        short.data_block = Duration::from_secs(1);
        for t in all {
            let want = if t == Timeout::DataBlock {
                Duration::from_secs(1)
            } else {
                t.duration()
            };
            assert_eq!(short.get(t), want, "{t:?}");
        }
    }

    #[test]
    fn durations_follow_the_rfc() {
        let table = [
            (Timeout::Initial, 300),
            (Timeout::Mail, 300),
            (Timeout::Rcpt, 300),
            (Timeout::DataInitiation, 120),
            (Timeout::DataBlock, 180),
            (Timeout::DataTermination, 600),
        ];
        for (t, secs) in table {
            assert_eq!(t.duration(), Duration::from_secs(secs), "{t:?}");
        }
    }
}
