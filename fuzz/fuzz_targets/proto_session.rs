//! Fuzz target: the SMTP/LMTP session state machine cursusd runs on every client's bytes.
//!
//! Trusts nothing: the first byte picks SMTP or LMTP and the read sizes, the rest is what a
//! client sends. The session is driven twice, once with all bytes in one read and once in
//! reads of the chosen sizes, answering every event with a fixed policy. A panic, a hang,
//! a reply that is not CRLF-terminated lines of at most 512 octets, or two transcripts that
//! differ (chunking must not matter: split-packet smuggling) is a finding.

#![no_main]

use cursus_proto::{
    Answer, Config, EnhancedStatus, Event, Limits, Output, Protocol, Reply, Session,
};
use libfuzzer_sys::fuzz_target;

fn run(protocol: Protocol, input: &[u8], sizes: &[usize]) -> Vec<String> {
    let mut config = Config::new("mx.example", protocol);
    config.starttls = true;
    config.limits = Limits {
        command_line: 128,
        recipients: 4,
        messages: 3,
        message_size: 256,
        errors: 30,
    };
    let mut s = Session::new(config);
    let _ = s.greeting();
    let mut log = Vec::new();
    let mut data = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        i += 1;
        if s.receive(head).is_err() {
            continue;
        }
        while let Some(out) = s.poll() {
            match out {
                Output::Reply(r) => {
                    let bytes = r.to_bytes();
                    for line in bytes.split_inclusive(|&b| b == b'\n') {
                        assert!(line.ends_with(b"\r\n"), "reply line without CRLF");
                        assert!(line.len() <= 512, "reply line over 512 octets");
                        assert_eq!(line.iter().filter(|&&b| b == b'\r').count(), 1);
                    }
                    flush(&mut log, &mut data);
                    log.push(r.to_string());
                }
                Output::Event(Event::Data(chunk)) => data.extend_from_slice(&chunk),
                Output::Event(e) => {
                    flush(&mut log, &mut data);
                    let answer = match &e {
                        Event::Rcpt { recipient, .. } if recipient.as_str().starts_with('x') => {
                            Some(Answer::Refuse(Reply::new(
                                550,
                                EnhancedStatus::new(5, 1, 1),
                                "no",
                            )))
                        }
                        Event::Mail { .. }
                        | Event::Rcpt { .. }
                        | Event::DataStart
                        | Event::DataEnd { .. } => Some(Answer::Accept),
                        _ => None,
                    };
                    log.push(format!("{e:?}"));
                    if let Some(a) = answer {
                        s.answer(a).expect("a valid answer");
                    }
                }
            }
        }
    }
    flush(&mut log, &mut data);
    log
}

fn flush(log: &mut Vec<String>, data: &mut Vec<u8>) {
    if !data.is_empty() {
        log.push(format!("DATA {:?}", data));
        data.clear();
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, body)) = input.split_first() else {
        return;
    };
    let protocol = if control & 1 == 0 {
        Protocol::Smtp
    } else {
        Protocol::Lmtp
    };
    let sizes = [
        1 + usize::from(control >> 1 & 7),
        1,
        1 + usize::from(control >> 4),
    ];
    let whole = run(protocol, body, &[usize::MAX]);
    let split = run(protocol, body, &sizes);
    assert_eq!(whole, split, "chunking changed the transcript");
});
