//! What an SMTP or LMTP server offers in its EHLO/LHLO reply (RFC 5321 §4.1.1.1 and the
//! extension RFCs), as the client needs it.
//!
//! Trusts nothing: the keyword lines come from the server; unknown keywords are ignored, a
//! SIZE without a number is "no limit given". Never fails.

/// What the server offered in its EHLO (or LHLO) reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub binary_mime: bool,
    pub chunking: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub enhanced_status: bool,
    /// `SIZE n`; `Some(0)` is "SIZE without a limit".
    pub size: Option<u64>,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Capabilities {
    /// Reads the keyword lines of an EHLO reply (the lines after the first).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Capabilities {
        let mut c = Capabilities::default();
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => c.pipelining = true,
                "8BITMIME" => c.eight_bit_mime = true,
                "BINARYMIME" => c.binary_mime = true,
                "CHUNKING" => c.chunking = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "STARTTLS" => c.starttls = true,
                "ENHANCEDSTATUSCODES" => c.enhanced_status = true,
                "SIZE" => c.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => {
                    for m in words {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => c.auth_plain = true,
                            "LOGIN" => c.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }
}
