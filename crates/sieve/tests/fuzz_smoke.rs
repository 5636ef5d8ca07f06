//! Fuzz smoke test: the fuzz entry point must never panic or hang on arbitrary input.
//!
//! Trusts nothing; feeds random bytes and mutated valid scripts to
//! `parse_and_run_for_fuzz`. The real fuzz target (cargo-fuzz) lives outside the
//! workspace; this keeps the property checked on every `cargo test`.

use proptest::prelude::*;

const SEEDS: &[&str] = &[
    "require [\"fileinto\", \"variables\", \"regex\"]; if header :regex \"subject\" \"^(.*)$\" { fileinto \"${1}\"; }",
    "require [\"foreverypart\", \"mime\", \"extracttext\", \"variables\"]; foreverypart { if header :mime :anychild \"content-type\" \"text/plain\" { extracttext \"x\"; } }",
    "require [\"editheader\", \"body\"]; addheader \"X-A\" \"b\"; deleteheader :index 1 \"X-A\"; if body :text :contains \"x\" { discard; }",
    "require [\"vacation\", \"enotify\", \"date\", \"relational\"]; vacation :days 1 \"away\"; notify \"mailto:a@b.c\"; if currentdate :value \"ge\" \"year\" \"2000\" { keep; }",
    "if anyof (not true, allof (size :over 1, exists \"from\")) { redirect \"x@example.com\"; } else { stop; }",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        cursus_sieve::parse_and_run_for_fuzz(&bytes);
    }

    #[test]
    fn mutated_scripts_never_panic(seed in 0..SEEDS.len(), cut in 0usize..400, insert in proptest::collection::vec(any::<u8>(), 0..16), msg in proptest::collection::vec(any::<u8>(), 0..256)) {
        let s = SEEDS[seed].as_bytes();
        let cut = cut.min(s.len());
        let mut input = s[..cut].to_vec();
        input.extend_from_slice(&insert);
        input.extend_from_slice(&s[cut..]);
        input.push(0);
        input.extend_from_slice(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n");
        input.extend_from_slice(&msg);
        cursus_sieve::parse_and_run_for_fuzz(&input);
    }
}
