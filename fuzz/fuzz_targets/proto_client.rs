//! Fuzz target: the SMTP/LMTP client state machine cursusd runs on every server's bytes.
//!
//! Trusts nothing: the first byte picks SMTP or LMTP, TLS and AUTH settings and the read
//! sizes; the rest is what a server sends. The daemon's side is played faithfully: a message
//! of three recipients whenever the session is ready (twice), the TLS handshake "succeeds"
//! when asked, and the connection breaks at the end of the input. A panic, or a message whose
//! recipients do not each get exactly one result before its MessageDone, is a finding.

#![no_main]

use std::sync::Arc;

use cursus_proto::transaction::Body;
use cursus_proto::{
    Action, Client, ClientConfig, Credentials, OutgoingMessage, OutgoingRecipient, Protocol,
    TlsMode,
};
use libfuzzer_sys::fuzz_target;

fn message() -> OutgoingMessage {
    OutgoingMessage {
        sender: Some("a@example.org".into()),
        recipients: ["b@example.net", "c@example.net", "d@example.net"]
            .into_iter()
            .map(OutgoingRecipient::new)
            .collect(),
        body: Arc::new(b"Subject: x\r\n\r\n.dot\r\ncaf\xc3\xa9\r\n".to_vec()),
        body_type: Body::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
    }
}

struct Driver {
    client: Client,
    sent: usize,
    /// Results of the message in flight.
    results: Option<Vec<u8>>,
}

impl Driver {
    fn pump(&mut self) {
        while let Some(a) = self.client.poll() {
            match a {
                Action::Send(bytes) => assert!(!bytes.is_empty()),
                Action::StartTls => self.client.tls_established(),
                Action::Ready => {
                    if self.sent < 2 && self.results.is_none() {
                        self.sent += 1;
                        self.results = Some(vec![0; 3]);
                        // The session may have ended since it said Ready (a later reply in
                        // the same read); the daemon then gets NotReady and moves on.
                        if self.client.send(message()).is_err() {
                            self.results = None;
                        }
                    }
                }
                Action::Recipient { index, .. } => {
                    let r = self.results.as_mut().expect("a result outside a message");
                    r[index] += 1;
                }
                Action::MessageDone => {
                    let r = self.results.take().expect("MessageDone outside a message");
                    assert!(r.iter().all(|&n| n == 1), "results per recipient: {r:?}");
                }
                Action::Failed(_) | Action::Closed => {}
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let protocol = if first & 1 == 0 {
        Protocol::Smtp
    } else {
        Protocol::Lmtp
    };
    let mut config = ClientConfig::new("client.example", protocol);
    config.tls = match (first >> 1) & 3 {
        0 => TlsMode::Never,
        1 => TlsMode::Required,
        _ => TlsMode::Opportunistic,
    };
    if first & 8 != 0 {
        config.auth = Some(Credentials {
            user: "u".into(),
            password: "p".into(),
        });
        config.auth_without_tls = first & 16 != 0;
    }
    // Bit 4 without AUTH (bit 3): a host remembered as failing EHLO.
    config.helo_only = first & 24 == 16;
    config.chunking = first & 32 != 0;
    let size = usize::from(first >> 6) * 7 + 1;
    let mut d = Driver {
        client: Client::new(config),
        sent: 0,
        results: None,
    };
    for chunk in rest.chunks(size) {
        d.client.receive(chunk);
        d.pump();
    }
    d.client.abort("end of input");
    d.pump();
    assert!(d.results.is_none(), "a message without MessageDone");
});
