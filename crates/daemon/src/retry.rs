//! The retry rules of cursus.toml applied to the queue: when a recipient that failed
//! temporarily is tried again, by address, error class and sender
//! (cursus_route::retry has the rules and their arithmetic; `cursus retry test` prints
//! the same decision).
//!
//! Trusts the transports' outcomes for the class of an error: it is read from the
//! enhanced status code and the words the transports put in their text (the SMTP client
//! says which command a reply answered, "in reply to RCPT TO"). An unknown shape is
//! `other`, which the default rule covers, so a misread never stops retrying; it can only
//! choose a less specific rule.

use cursus_mail::{Outcome, codes};
use cursus_queue::{Envelope, RetryPolicy};
use std::sync::Arc;

use cursus_route::retry::{ErrorClass, RetryRule, RetryRules};
use jiff::{SignedDuration, Timestamp};

/// The configured rules, shared by the queue (as its retry policy), the hints and the
/// delay notices (for the time the sender is told).
#[derive(Clone, Debug)]
pub struct Rules(pub Arc<RetryRules>);

impl Rules {
    pub fn new(rules: RetryRules) -> Rules {
        Rules(Arc::new(rules))
    }

    /// The rule for recipient `address` of a message with `envelope` failing with `outcome`.
    pub fn rule(&self, envelope: &Envelope, address: &str, outcome: &Outcome) -> &RetryRule {
        let sender = envelope.sender.address().unwrap_or("");
        self.0.find(address, classify(outcome), sender)
    }

    /// When that recipient is given up: arrival plus its rule's lifetime.
    pub fn give_up(
        &self,
        envelope: &Envelope,
        address: &str,
        outcome: &Outcome,
    ) -> Option<Timestamp> {
        after_arrival(envelope, self.rule(envelope, address, outcome).lifetime)
    }
}

/// `secs` after the message's arrival.
fn after_arrival(envelope: &Envelope, secs: u64) -> Option<Timestamp> {
    envelope
        .received
        .checked_add(SignedDuration::from_secs(
            i64::try_from(secs).unwrap_or(i64::MAX / 4),
        ))
        .ok()
}

impl RetryPolicy for Rules {
    fn next_attempt(
        &self,
        envelope: &Envelope,
        recipient: usize,
        outcome: &Outcome,
        _attempts: u32,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let address = envelope
            .recipients
            .get(recipient)
            .map_or("", |r| r.address.as_str());
        let rule = self.rule(envelope, address, outcome);
        let elapsed = now.duration_since(envelope.received).as_secs().max(0);
        let next = rule.next_after(u64::try_from(elapsed).unwrap_or(0))?;
        after_arrival(envelope, next)
    }
}

/// The error class of a temporary outcome.
pub fn classify(outcome: &Outcome) -> ErrorClass {
    let status = outcome.status.to_string();
    let text = outcome.text.to_ascii_lowercase();
    let has = |w: &str| text.contains(w);
    if outcome.status == codes::MAILBOX_FULL.as_temporary() || has("over quota") {
        ErrorClass::Quota
    } else if has("connection refused") || has("refused the connection") {
        ErrorClass::Refused
    } else if has("timed out") || has("timeout") || has("unreachable") {
        ErrorClass::Timeout
    } else if status == "4.4.3" || has("dns") || has("name server") {
        ErrorClass::Dns
    } else if has("tls") || has("certificate") {
        ErrorClass::Tls
    } else if has("in reply to rcpt") {
        ErrorClass::Rcpt
    } else if has("in reply to mail") {
        ErrorClass::Mail
    } else if has("in reply to data") || has("in reply to bdat") || has("in reply to end of data") {
        ErrorClass::Data
    } else if has("greeting") || has("in reply to ehlo") || has("in reply to helo") {
        ErrorClass::Greeting
    } else if matches!(status.as_str(), "4.2.0" | "4.2.1") || has("home") {
        ErrorClass::Home
    } else if matches!(status.as_str(), "4.4.1" | "4.4.2") {
        ErrorClass::Timeout
    } else {
        ErrorClass::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cursus_mail::{EnhancedStatus, Sender};
    use cursus_queue::Recipient;

    fn temp(status: (u8, u16, u16), text: &str) -> Outcome {
        Outcome::temporary(EnhancedStatus::new(status.0, status.1, status.2), text)
    }

    #[test]
    fn classes_from_codes_and_words() {
        for (outcome, class) in [
            (temp((4, 2, 2), "mailbox full"), ErrorClass::Quota),
            (
                temp((4, 4, 1), "connect to 192.0.2.1:25: Connection refused"),
                ErrorClass::Refused,
            ),
            (
                temp((4, 4, 1), "connect to 192.0.2.1:25: timed out"),
                ErrorClass::Timeout,
            ),
            (
                temp((4, 4, 3), "MX lookup for example.org failed"),
                ErrorClass::Dns,
            ),
            (temp((4, 7, 5), "TLS handshake failed"), ErrorClass::Tls),
            (
                temp(
                    (4, 7, 1),
                    "mx.example said: 450 4.7.1 greylisted (in reply to RCPT TO)",
                ),
                ErrorClass::Rcpt,
            ),
            (
                temp((4, 3, 0), "451 busy (in reply to MAIL FROM)"),
                ErrorClass::Mail,
            ),
            (
                temp((4, 3, 0), "451 try later (in reply to end of DATA)"),
                ErrorClass::Data,
            ),
            (
                temp((4, 3, 2), "421 too busy (in reply to EHLO)"),
                ErrorClass::Greeting,
            ),
            (
                temp((4, 2, 0), "cannot open /home/u/Maildir"),
                ErrorClass::Home,
            ),
            (temp((4, 3, 0), "something odd"), ErrorClass::Other),
        ] {
            assert_eq!(classify(&outcome), class, "{}", outcome.text);
        }
    }

    #[test]
    fn the_first_matching_rule_schedules_and_the_lifetime_bounces() {
        let text =
            "[[retry]]\npattern = \"slow.example\"\nerrors = [\"rcpt\"]\nschedule = \"F,2h,20m\"\n";
        let rules = Rules::new(RetryRules::parse(text, "c", 86_400).expect("rules"));
        let received = Timestamp::from_second(1_000_000).expect("time");
        let envelope = Envelope {
            received,
            ..Envelope::new(
                Sender::Address("a@b.example".into()),
                vec![Recipient {
                    address: "joe@slow.example".into(),
                    notify: None,
                    orcpt: None,
                }],
            )
        };
        let rcpt = temp((4, 7, 1), "450 greylisted (in reply to RCPT TO)");
        let at = |secs: i64| {
            received
                .checked_add(SignedDuration::from_secs(secs))
                .expect("t")
        };
        assert_eq!(
            rules.next_attempt(&envelope, 0, &rcpt, 1, at(5)),
            Some(at(1200))
        );
        assert_eq!(
            rules.next_attempt(&envelope, 0, &rcpt, 2, at(1200)),
            Some(at(2400))
        );
        // The rule's lifetime is its last cutoff: 2 h; a failure then bounces.
        assert_eq!(rules.next_attempt(&envelope, 0, &rcpt, 6, at(7200)), None);
        // Another class: the default schedule (5 minutes first), lifetime 1 day.
        let other = temp((4, 3, 0), "busy");
        assert_eq!(
            rules.next_attempt(&envelope, 0, &other, 1, at(1)),
            Some(at(300))
        );
        assert_eq!(
            rules.next_attempt(&envelope, 0, &other, 40, at(86_400)),
            None
        );
    }
}
