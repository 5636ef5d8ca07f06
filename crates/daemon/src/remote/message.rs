//! The queue's envelope and content as an outgoing message: the sender, the recipients with
//! their DSN parameters (NOTIFY, ORCPT) passed on, RET, ENVID, BODY and SMTPUTF8.
//!
//! Trusts the queue (the values were checked at reception). Never fails.

use std::sync::Arc;

use cursus_proto::transaction::{Body, Ret};
use cursus_proto::{OutgoingMessage, OutgoingRecipient};
use cursus_queue::{BodyType, Envelope, Notify, Recipient};

/// The message without recipients (each group adds its own).
pub fn outgoing(envelope: &Envelope, body: Vec<u8>) -> OutgoingMessage {
    OutgoingMessage {
        sender: envelope.sender.address().map(str::to_string),
        recipients: Vec::new(),
        body: Arc::new(body),
        body_type: match envelope.body {
            BodyType::SevenBit => Body::SevenBit,
            BodyType::EightBitMime => Body::EightBitMime,
            BodyType::BinaryMime => Body::BinaryMime,
        },
        smtputf8: envelope.smtputf8,
        ret: envelope.ret.map(|r| match r {
            cursus_queue::Ret::Full => Ret::Full,
            cursus_queue::Ret::Headers => Ret::Headers,
        }),
        envid: envelope.envid.clone(),
    }
}

/// A routed address, with the DSN parameters of the envelope recipient it came from.
pub fn recipient(address: &str, original: Option<&Recipient>) -> OutgoingRecipient {
    OutgoingRecipient {
        address: address.to_string(),
        notify: original.and_then(|r| r.notify).map(notify_text),
        orcpt: original.and_then(|r| r.orcpt.clone()),
    }
}

/// `NOTIFY=` as written on the wire.
pub fn notify_text(n: Notify) -> String {
    if n.is_never() {
        return "NEVER".to_string();
    }
    let mut words = Vec::new();
    for (flag, word) in [
        (Notify::SUCCESS, "SUCCESS"),
        (Notify::FAILURE, "FAILURE"),
        (Notify::DELAY, "DELAY"),
    ] {
        if n.contains(flag) {
            words.push(word);
        }
    }
    words.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_written_as_rfc_3461_asks() {
        assert_eq!(notify_text(Notify::NEVER), "NEVER");
        assert_eq!(
            notify_text(Notify::SUCCESS.union(Notify::DELAY)),
            "SUCCESS,DELAY"
        );
        assert_eq!(notify_text(Notify::FAILURE), "FAILURE");
    }
}
