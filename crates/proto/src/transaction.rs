//! The envelope of one mail transaction as the client stated it: sender, recipients and
//! their ESMTP parameters (SIZE, BODY, SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT).
//!
//! Trusts: smtp-proto's parse of the command line (address syntax, parameter syntax), and
//! nothing else; values are converted here into typed fields, and parameters we do not
//! advertise are refused before they reach the daemon (see `session.rs`).
//! Fails: [`MailParams::from_smtp`] returns the name of the first parameter we do not support.

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8, MailFrom, RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};

pub use cursus_mail::Sender;

/// A forward-path as the client gave it, without angle brackets or source route.
/// `RCPT TO:<postmaster>` (no domain, RFC 5321 §4.5.1) is the recipient `postmaster`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Recipient(String);

impl Recipient {
    pub(crate) fn new(address: String) -> Recipient {
        Recipient(address)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the bare `postmaster` that every server must accept.
    pub fn is_postmaster(&self) -> bool {
        self.0.eq_ignore_ascii_case("postmaster")
    }
}

/// `BODY=` (RFC 6152 8BITMIME, RFC 3030 BINARYMIME).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    /// Only with BDAT: DATA is refused for it (RFC 3030 §3).
    BinaryMime,
}

/// DSN `RET=` (RFC 3461 §4.3): what a bounce should return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// MAIL FROM parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870): the client's estimate, in octets.
    pub size: Option<u64>,
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531): addresses and headers may be UTF-8.
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// DSN `ENVID=` (RFC 3461 §4.4), xtext-decoded.
    pub envid: Option<String>,
}

/// DSN `NOTIFY=` (RFC 3461 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Never,
    /// Any of SUCCESS, FAILURE, DELAY.
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// RCPT TO parameters, kept with each recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// DSN `ORCPT=rfc822;` (RFC 3461 §4.2): the original recipient, xtext-decoded.
    pub orcpt: Option<String>,
}

/// The transaction in progress: the accepted sender and the accepted recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub sender: Sender,
    pub params: MailParams,
    pub recipients: Vec<(Recipient, RcptParams)>,
}

impl MailParams {
    /// Converts smtp-proto's MAIL parameters; `Err` names a parameter we do not advertise
    /// (REQUIRETLS, AUTH=, BY=, HOLDFOR=, MT-PRIORITY=, ...).
    pub(crate) fn from_smtp(from: &MailFrom<String>) -> Result<MailParams, &'static str> {
        let unsupported = [
            (from.trans_id.is_some(), "TRANSID"),
            (from.by != 0, "BY"),
            (from.solicit.is_some(), "SOLICIT"),
            (from.mtrk.is_some(), "MTRK"),
            (from.auth.is_some(), "AUTH"),
            (from.hold_for != 0, "HOLDFOR"),
            (from.hold_until != 0, "HOLDUNTIL"),
            (from.mt_priority != 0, "MT-PRIORITY"),
        ];
        if let Some((_, name)) = unsupported.iter().find(|(present, _)| *present) {
            return Err(name);
        }
        let known = MAIL_BODY_7BIT
            | MAIL_BODY_8BITMIME
            | MAIL_BODY_BINARYMIME
            | MAIL_RET_FULL
            | MAIL_RET_HDRS
            | MAIL_SMTPUTF8;
        if from.flags & !known != 0 {
            return Err(if from.flags & smtp_proto::MAIL_REQUIRETLS != 0 {
                "REQUIRETLS"
            } else if from.flags & smtp_proto::MAIL_CONPERM != 0 {
                "CONPERM"
            } else {
                "BY"
            });
        }
        let body = if from.flags & MAIL_BODY_BINARYMIME != 0 {
            Some(Body::BinaryMime)
        } else if from.flags & MAIL_BODY_8BITMIME != 0 {
            Some(Body::EightBitMime)
        } else if from.flags & MAIL_BODY_7BIT != 0 {
            Some(Body::SevenBit)
        } else {
            None
        };
        let ret = if from.flags & MAIL_RET_FULL != 0 {
            Some(Ret::Full)
        } else if from.flags & MAIL_RET_HDRS != 0 {
            Some(Ret::Headers)
        } else {
            None
        };
        Ok(MailParams {
            size: (from.size != 0).then_some(from.size as u64),
            body,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            ret,
            envid: from.env_id.clone(),
        })
    }
}

impl RcptParams {
    /// Converts smtp-proto's RCPT parameters; `Err` names one we do not advertise.
    pub(crate) fn from_smtp(to: &RcptTo<String>) -> Result<RcptParams, &'static str> {
        if to.flags & RCPT_CONNEG != 0 {
            return Err("CONNEG");
        }
        if to.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || to.rrvs != 0 {
            return Err("RRVS");
        }
        let notify = if to.flags & RCPT_NOTIFY_NEVER != 0 {
            Some(Notify::Never)
        } else if to.flags & (RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY) != 0 {
            Some(Notify::On {
                success: to.flags & RCPT_NOTIFY_SUCCESS != 0,
                failure: to.flags & RCPT_NOTIFY_FAILURE != 0,
                delay: to.flags & RCPT_NOTIFY_DELAY != 0,
            })
        } else {
            None
        };
        Ok(RcptParams {
            notify,
            orcpt: to.orcpt.clone(),
        })
    }
}
