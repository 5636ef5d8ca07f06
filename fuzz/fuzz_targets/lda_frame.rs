//! Fuzz target: the frame decoder cursus-lda runs on every request from the MTA (and the
//! MTA on every answer).
//!
//! Trusts nothing: arbitrary bytes are a stream of frames. Every decoded frame must encode
//! again to exactly the bytes it was decoded from (the format has one encoding per value),
//! and a decoder that asks for more data must never have consumed any. A panic, a hang or a
//! broken round trip is a finding.

#![no_main]

use cursus_lda::protocol::{Decoded, decode_answer, decode_request, encode_answer, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Frame { value, consumed }) = decode_request(data) {
        assert!(consumed <= data.len());
        let again = encode_request(&value).expect("a decoded request encodes");
        assert_eq!(again, &data[..consumed], "request round trip");
    }
    if let Ok(Decoded::Frame { value, consumed }) = decode_answer(data) {
        assert!(consumed <= data.len());
        let again = encode_answer(&value).expect("a decoded answer encodes");
        assert_eq!(again, &data[..consumed], "answer round trip");
    }
});
