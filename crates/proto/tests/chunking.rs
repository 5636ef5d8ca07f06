//! Chunking equivalence: the same bytes give the same replies and events (with `Data` chunks
//! merged) whether they arrive at once, one byte at a time, or split anywhere.
//!
//! Trusts: only the public API. This is the property that makes pipelining safe and stops
//! split-packet tricks (an end-of-data or a STARTTLS split across reads).

mod harness;

use cursus_proto::{Config, Limits, Protocol};
use harness::{Driver, Policy};
use proptest::prelude::*;

/// Pieces of client input: commands, content, smuggling variants, binary chunks, junk.
const PIECES: &[&[u8]] = &[
    b"EHLO c.example\r\n",
    b"HELO c\r\n",
    b"LHLO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> BODY=BINARYMIME\r\n",
    b"MAIL FROM:<a@b.example> SIZE=999999999\r\n",
    b"RCPT TO:<u@x.example>\r\n",
    b"RCPT TO:<unknown@x.example>\r\n",
    b"RCPT TO:<full@x.example> NOTIFY=FAILURE ORCPT=rfc822;u@x.example\r\n",
    b"DATA\r\n",
    b"Subject: s\r\n\r\nbody\r\n",
    b"..dot\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r\n\x00.\r\n",
    b"BDAT 5\r\nab\r\nc",
    b"BDAT 3 LAST\r\n\x00\n\r",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"\n",
    b"\r",
    b"\xff\xfe",
];

fn config(lmtp: bool) -> Config {
    let mut config = Config::new(
        "mx.example",
        if lmtp { Protocol::Lmtp } else { Protocol::Smtp },
    );
    config.starttls = true;
    config.limits = Limits {
        command_line: 64,
        recipients: 3,
        messages: 4,
        message_size: 40,
        errors: 12,
    };
    config
}

fn policy(lmtp: bool) -> Policy {
    Policy {
        refuse_unknown: true,
        disk_full: false,
        lmtp_per_recipient: lmtp,
    }
}

fn run(input: &[u8], sizes: Option<&[usize]>, lmtp: bool) -> Vec<String> {
    let mut d = Driver::new(config(lmtp), policy(lmtp));
    match sizes {
        None => d.feed(input),
        Some(sizes) => d.feed_chunks(input, sizes),
    }
    d.transcript
}

fn assemble(indexes: &[usize]) -> Vec<u8> {
    indexes
        .iter()
        .flat_map(|&i| PIECES[i % PIECES.len()].iter().copied())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chunking_gives_the_same_transcript(
        pieces in prop::collection::vec(0usize..PIECES.len(), 0..40),
        sizes in prop::collection::vec(1usize..24, 1..8),
        lmtp in any::<bool>(),
    ) {
        let input = assemble(&pieces);
        let whole = run(&input, None, lmtp);
        prop_assert_eq!(&whole, &run(&input, Some(&sizes), lmtp));
        prop_assert_eq!(&whole, &run(&input, Some(&[1]), lmtp));
    }

    #[test]
    fn random_bytes_never_panic_and_chunk_alike(
        prefix in 0usize..3,
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        sizes in prop::collection::vec(1usize..16, 1..6),
    ) {
        let mut input: Vec<u8> = match prefix {
            0 => Vec::new(),
            1 => b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n".to_vec(),
            _ => b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nBDAT 100 LAST\r\n".to_vec(),
        };
        input.extend_from_slice(&bytes);
        let whole = run(&input, None, false);
        prop_assert_eq!(&whole, &run(&input, Some(&sizes), false));
    }
}

/// The fixed corpus, one byte at a time: every piece after a full transaction prefix.
#[test]
fn byte_at_a_time_matches_whole_for_each_piece() {
    let prefix = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@x.example>\r\nDATA\r\n";
    for piece in PIECES {
        for lmtp in [false, true] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(piece);
            input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
            assert_eq!(
                run(&input, None, lmtp),
                run(&input, Some(&[1]), lmtp),
                "piece {piece:?}"
            );
        }
    }
}
