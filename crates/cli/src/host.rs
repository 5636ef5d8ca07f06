//! The Sieve host of `cursus sieve test`: a mail store that exists only on the command line.
//!
//! Trusts the user's flags: a mailbox exists when it is INBOX or was named with
//! --mailbox-exists. Nothing is remembered between runs (no duplicate or vacation memory)
//! and nothing is loaded (include finds no script), so a test run has no side effects.
//! Cannot fail.

use std::time::{SystemTime, UNIX_EPOCH};

use cursus_sieve::{DateTime, Host};

/// A host whose mailboxes are the ones named on the command line.
#[derive(Debug, Clone, Default)]
pub struct CommandLineHost {
    mailboxes: Vec<String>,
}

impl CommandLineHost {
    /// A host in which INBOX and `mailboxes` exist.
    pub fn new(mailboxes: Vec<String>) -> Self {
        CommandLineHost { mailboxes }
    }
}

impl Host for CommandLineHost {
    fn mailbox_exists(&mut self, mailbox: &str) -> bool {
        mailbox.eq_ignore_ascii_case("INBOX") || self.mailboxes.iter().any(|m| m == mailbox)
    }

    fn now(&mut self) -> DateTime {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        DateTime {
            timestamp,
            offset: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_and_named_mailboxes_exist() {
        let mut host = CommandLineHost::new(vec!["Lists.rust".into()]);
        assert!(host.mailbox_exists("INBOX"));
        assert!(host.mailbox_exists("inbox"));
        assert!(host.mailbox_exists("Lists.rust"));
        assert!(!host.mailbox_exists("lists.rust"));
        assert!(!host.mailbox_exists("Junk"));
    }
}
