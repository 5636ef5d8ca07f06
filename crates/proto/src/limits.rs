//! Per-connection limits of an SMTP or LMTP session.
//!
//! Trusts: the daemon's configuration. Each limit bounds what one client can make the server
//! hold or do; the session enforces them itself, without asking the daemon.
//! Attacks stopped: memory exhaustion by endless command lines (`command_line`), recipient
//! flooding and dictionary walks (`recipients`, `errors`), connection hogging with many
//! messages (`messages`), disk filling (`message_size`), and protocol fuzzing or
//! brute force that only produces errors (`errors`: 421 4.7.0 and disconnect).

/// The limits one session enforces. `Limits::default()` follows Postfix's defaults where
/// Postfix has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line in octets, CRLF included. RFC 5321 §4.5.3.1.4 sets 512 as the
    /// minimum and lets extensions add to it; DSN adds up to 500 to RCPT (RFC 3461 §5), so
    /// the default is 1024. Longer lines get `500 5.5.2` and are discarded whole.
    pub command_line: usize,
    /// Accepted recipients per message; one more gets `452 4.5.3` (RFC 5321 §4.5.3.1.8
    /// asks for at least 100).
    pub recipients: usize,
    /// Messages per connection (ended transactions, accepted or not); the next MAIL gets
    /// `421 4.7.0` and the session closes.
    pub messages: usize,
    /// Largest message in octets, after dot-unstuffing; advertised as `SIZE`. A larger
    /// `MAIL SIZE=` gets `552 5.3.4` at once; larger content is discarded and answered
    /// `552 5.3.4` at its end.
    pub message_size: u64,
    /// Negative replies to commands before the session answers `421 4.7.0` and closes
    /// (Postfix's `smtpd_hard_error_limit`).
    pub errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line: 1024,
            recipients: 100,
            messages: 100,
            message_size: 10_240_000,
            errors: 20,
        }
    }
}
