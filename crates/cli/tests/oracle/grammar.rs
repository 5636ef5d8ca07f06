//! The generated language of the oracle: Sieve scripts, messages and envelopes that both
//! cursus-sieve and Pigeonhole support without configuration, as proptest strategies.
//!
//! Trusts nothing it makes to be meaningful: cases are random. Where Pigeonhole is known to
//! be wrong (ORACLE.md) the grammar keeps away from it, and says so where it does.

use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
pub(crate) enum MatchType {
    Is,
    Contains,
    Matches,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    All,
    Local,
    Domain,
    User,
    Detail,
}

#[derive(Debug, Clone)]
pub(crate) struct Match {
    pub(crate) match_type: MatchType,
    pub(crate) octet: bool,
    pub(crate) keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    Header(Match, Vec<&'static str>),
    Address(Match, Part, Vec<&'static str>),
    Envelope(Match, Part, Vec<&'static str>),
    Exists(Vec<&'static str>),
    Size { over: bool, limit: u32 },
    Bool(bool),
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
}

#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    If {
        branches: Vec<(Test, Vec<Cmd>)>,
        otherwise: Option<Vec<Cmd>>,
    },
    /// With `:copy` exactly when the mailbox is in [`COPY_TARGETS`].
    FileInto(&'static str),
    /// With `:copy` exactly when the address is in [`COPY_TARGETS`].
    Redirect(&'static str),
    Keep,
    Discard,
    Stop,
    Set {
        name: &'static str,
        modifier: Option<&'static str>,
        value: &'static str,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) script: Vec<Cmd>,
    pub(crate) message: Message,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) from: &'static str,
    pub(crate) to: Vec<&'static str>,
    pub(crate) cc: Option<&'static str>,
    pub(crate) subject: String,
    pub(crate) list_id: Option<&'static str>,
    pub(crate) spam_flag: Option<&'static str>,
    pub(crate) labels: Vec<&'static str>,
    pub(crate) crlf: bool,
}

pub(crate) const HEADERS: &[&str] = &[
    "subject",
    "Subject",
    "from",
    "to",
    "cc",
    "list-id",
    "x-spam-flag",
    "x-label",
    "x-missing",
];
pub(crate) const ADDRESS_HEADERS: &[&str] = &["from", "to", "cc", "sender", "reply-to"];
pub(crate) const ENVELOPE_PARTS: &[&str] = &["from", "to"];
pub(crate) const WORDS: &[&str] = &[
    "rust",
    "rust-users",
    "[rust-users]",
    "Hello",
    "hello",
    "SPAM",
    "***SPAM***",
    "YES",
    "yes",
    "NO",
    "alice",
    "Alice",
    "bob",
    "tag",
    "lists",
    "example.org",
    "EXAMPLE.NET",
    "lists.example.org",
    "alice@example.org",
    "bob+tag@example.net",
    "invoice",
    "Re:",
    "café",
    "",
];
pub(crate) const PATTERNS: &[&str] = &[
    "*",
    "?*",
    "*rust*",
    "[*]*",
    "*[rust-users]*",
    "\\*\\*\\**",
    "*@example.org",
    "*@*.example.org",
    "a*e",
    "b?b",
    "*+*",
    "*.*.*",
    "caf?",
    "Re: *",
    "*-*",
];
pub(crate) const MAILBOXES: &[&str] = &["Junk", "Lists.rust", "Archive", "INBOX", "Spam"];
/// Targets always used with `:copy`, all others never: Pigeonhole drops a `fileinto X` or
/// `redirect X` that follows the same action with `:copy`, so the implicit keep survives
/// (ORACLE.md, RFC 5228 §2.10.2 / RFC 3894 §3). No variable mailbox can expand to one.
pub(crate) const COPY_TARGETS: &[&str] = &["Archive", "INBOX", "forward@example.com"];
// Never empty: Pigeonhole stores `fileinto ""` into INBOX, Cursus refuses it (ORACLE.md).
pub(crate) const VARIABLE_MAILBOXES: &[&str] =
    &["Lists.${1}", "Box-${label}", "Folder-${2}", "${1}-${1}"];
pub(crate) const REDIRECTS: &[&str] = &["forward@example.com", "other@example.org"];
pub(crate) const SET_VALUES: &[&str] = &["${1}", "x${2}y", "Junk", "${1}.${2}", ""];
pub(crate) const SENDERS: &[&str] = &[
    "alice@example.org",
    "owner-rust@lists.example.org",
    "Bob+tag@Example.NET",
    "MAILER-DAEMON@example.com",
];
pub(crate) const RECIPIENTS: &[&str] = &[
    "bob@example.net",
    "bob+lists@example.net",
    "carol+rust-users@lists.example.org",
    "Carol@Example.ORG",
];
pub(crate) const FROM_FIELDS: &[&str] = &[
    "alice@example.org",
    "Alice Example <alice@example.org>",
    "\"Bob, Jr.\" <bob+tag@Example.NET>",
    "carol@lists.example.org",
    "=?UTF-8?Q?Caf=C3=A9?= <cafe@example.org>",
    "alice@example.org (Alice in a comment)",
    "\"alice@example.org\" <mallory@example.com>",
    "Alice\n  Example <alice@example.org>",
];
pub(crate) const TO_FIELDS: &[&str] = &[
    "bob@example.net",
    "Bob <bob+lists@example.net>",
    "rust-users@lists.example.org",
    "Carol@Example.ORG",
    // Not "undisclosed-recipients:;": Pigeonhole matches an empty group's text with
    // :all, though the address test never acts on group names (ORACLE.md, RFC 5228 §5.1).
    "team: bob@example.net, carol@example.org;",
    "bob@example.net,\n carol@lists.example.org",
];
pub(crate) const SUBJECT_WORDS: &[&str] = &[
    "[rust-users]",
    "Hello",
    "hello",
    "***SPAM***",
    "Re:",
    "invoice",
    "lifetimes",
    "a-b",
    "=?UTF-8?Q?caf=C3=A9?=",
    "=?ISO-8859-1?Q?caf=E9?=",
    "=?UTF-8?B?Y2Fmw6k=?=",
    "folded\n line",
];
pub(crate) const LIST_IDS: &[&str] = &[
    "<rust-users.lists.example.org>",
    "Rust users <rust-users.lists.example.org>",
    "<announce.example.org>",
];

pub(crate) fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    proptest::sample::select(items)
}

pub(crate) fn some_of(
    items: &'static [&'static str],
    max: usize,
) -> impl Strategy<Value = Vec<&'static str>> + Clone {
    proptest::collection::vec(pick(items), 1..=max)
}

pub(crate) fn match_strategy() -> impl Strategy<Value = Match> + Clone {
    let mt = prop_oneof![
        Just(MatchType::Is),
        Just(MatchType::Contains),
        Just(MatchType::Matches)
    ];
    let octet = proptest::bool::weighted(0.2);
    (mt, octet, proptest::collection::vec(0..100u8, 1..=3)).prop_map(
        |(match_type, octet, picks)| {
            let keys = picks
                .iter()
                .map(|&n| {
                    let n = usize::from(n);
                    if matches!(match_type, MatchType::Matches) && n % 2 == 0 {
                        PATTERNS[n / 2 % PATTERNS.len()].to_string()
                    } else {
                        WORDS[n % WORDS.len()].to_string()
                    }
                })
                .collect();
            Match {
                match_type,
                octet,
                keys,
            }
        },
    )
}

pub(crate) fn part_strategy() -> impl Strategy<Value = Part> + Clone {
    prop_oneof![
        3 => Just(Part::All),
        2 => Just(Part::Local),
        2 => Just(Part::Domain),
        1 => Just(Part::User),
        1 => Just(Part::Detail),
    ]
}

pub(crate) fn test_strategy() -> impl Strategy<Value = Test> {
    let leaf = prop_oneof![
        4 => (match_strategy(), some_of(HEADERS, 2)).prop_map(|(m, h)| Test::Header(m, h)),
        3 => (match_strategy(), part_strategy(), some_of(ADDRESS_HEADERS, 2))
            .prop_map(|(m, p, h)| Test::Address(m, p, h)),
        2 => (match_strategy(), part_strategy(), some_of(ENVELOPE_PARTS, 2))
            .prop_map(|(m, p, h)| Test::Envelope(m, p, h)),
        1 => some_of(HEADERS, 2).prop_map(Test::Exists),
        1 => (any::<bool>(), 0..600u32).prop_map(|(over, limit)| Test::Size { over, limit }),
        1 => any::<bool>().prop_map(Test::Bool),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        // Pigeonhole folds an anyof/allof with a constant operand and skips the tests before
        // it, losing their match variables (ORACLE.md, RFC 5229 §3.2): no constants there.
        let operands = proptest::collection::vec(inner.clone(), 1..=3)
            .prop_filter("no true/false operands of anyof/allof", |tests| {
                !tests.iter().any(is_constant)
            });
        prop_oneof![
            inner.prop_map(|t| Test::Not(Box::new(t))),
            operands.clone().prop_map(Test::AllOf),
            operands.prop_map(Test::AnyOf),
        ]
    })
}

pub(crate) fn is_constant(t: &Test) -> bool {
    match t {
        Test::Bool(_) => true,
        Test::Not(inner) => is_constant(inner),
        _ => false,
    }
}

pub(crate) fn uses_size(cmds: &[Cmd]) -> bool {
    fn in_test(t: &Test) -> bool {
        match t {
            Test::Size { .. } => true,
            Test::Not(inner) => in_test(inner),
            Test::AllOf(ts) | Test::AnyOf(ts) => ts.iter().any(in_test),
            _ => false,
        }
    }
    cmds.iter().any(|c| match c {
        Cmd::If {
            branches,
            otherwise,
        } => {
            branches
                .iter()
                .any(|(t, body)| in_test(t) || uses_size(body))
                || otherwise.as_deref().is_some_and(uses_size)
        }
        _ => false,
    })
}

pub(crate) fn action_strategy() -> impl Strategy<Value = Cmd> + Clone {
    let mailbox = prop_oneof![3 => pick(MAILBOXES), 1 => pick(VARIABLE_MAILBOXES)];
    prop_oneof![
        5 => mailbox.prop_map(Cmd::FileInto),
        1 => pick(REDIRECTS).prop_map(Cmd::Redirect),
        2 => Just(Cmd::Keep),
        1 => Just(Cmd::Discard),
        1 => Just(Cmd::Stop),
        1 => (
            pick(&["label", "x"]),
            proptest::option::of(pick(&[":lower", ":upper", ":length"])),
            pick(SET_VALUES)
        )
            .prop_map(|(name, modifier, value)| Cmd::Set { name, modifier, value }),
    ]
}

pub(crate) fn block_strategy(max: usize) -> impl Strategy<Value = Vec<Cmd>> {
    let leaf = action_strategy();
    let cmd = leaf.prop_recursive(2, 12, 3, |inner| {
        let block = proptest::collection::vec(inner, 1..=3);
        (
            proptest::collection::vec((test_strategy(), block.clone()), 1..=3),
            proptest::option::of(block),
        )
            .prop_map(|(branches, otherwise)| Cmd::If {
                branches,
                otherwise,
            })
    });
    proptest::collection::vec(cmd, 1..=max)
}

pub(crate) fn message_strategy() -> impl Strategy<Value = Message> {
    (
        pick(FROM_FIELDS),
        some_of(TO_FIELDS, 2),
        proptest::option::of(pick(TO_FIELDS)),
        proptest::collection::vec(pick(SUBJECT_WORDS), 0..=4),
        proptest::option::of(pick(LIST_IDS)),
        proptest::option::of(pick(&["YES", "NO"])),
        proptest::collection::vec(pick(&["rust", "Invoice", "lists"]), 0..=2),
        any::<bool>(),
    )
        .prop_map(
            |(from, to, cc, subject, list_id, spam_flag, labels, crlf)| Message {
                from,
                to,
                cc,
                subject: subject.join(" "),
                list_id,
                spam_flag,
                labels,
                crlf,
            },
        )
}

pub(crate) fn case_strategy() -> impl Strategy<Value = Case> {
    (
        block_strategy(5),
        message_strategy(),
        pick(SENDERS),
        pick(RECIPIENTS),
    )
        .prop_map(|(script, mut message, from, to)| {
            // Pigeonhole's size counts the bytes of the file, LF or CRLF; RFC 5322 messages
            // have CRLF line ends, which Cursus counts (ORACLE.md, RFC 5228 §5.9).
            message.crlf |= uses_size(&script);
            Case {
                script,
                message,
                from,
                to,
            }
        })
}
