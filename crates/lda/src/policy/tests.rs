//! Table tests of the policy: parsing errors with positions and suggestions, and one row per
//! attack the checks stop.

use super::*;

const SYSTEM: &str = r#"
min_uid = 1000

[[allow]]
name = "home-maildir"
kind = "maildir"
path = "~/Maildir"
subtree = true

[[allow]]
name = "spool"
kind = "mbox"
path = "/var/mail/${user}"

[[allow]]
name = "virtual"
kind = "maildir"
path = "/srv/vmail/"
subtree = true
users = ["vmail"]

[[allow]]
name = "procmail"
kind = "command"
path = "/usr/bin/procmail"
arguments = true

[[allow]]
name = "smrsh"
kind = "command"
path = "/etc/cursus/lda-commands"
subtree = true

[[allow]]
name = "root-spool"
kind = "mbox"
path = "/var/mail/root"
users = ["root"]
"#;

fn system() -> Policy {
    parse_system(SYSTEM, "lda.toml").expect("valid policy")
}

fn decide(policy: &Policy, user: &str, uid: u32, home: &str, dest: &str) -> Decision {
    let destination: Destination = dest.parse().expect("destination");
    check(
        policy,
        &Request {
            user,
            uid,
            home,
            destination: &destination,
        },
    )
}

fn allowed_by(d: &Decision) -> Option<&str> {
    match d {
        Decision::Allowed { rule, .. } => Some(rule),
        Decision::Refused { .. } => None,
    }
}

#[test]
fn allowed_destinations() {
    let p = system();
    let table: &[(&str, u32, &str, &str, &str)] = &[
        (
            "joe",
            1000,
            "/home/joe",
            "maildir:/home/joe/Maildir",
            "home-maildir",
        ),
        (
            "joe",
            1000,
            "/home/joe",
            "maildir:/home/joe/Maildir/.Sent",
            "home-maildir",
        ),
        ("joe", 1000, "/home/joe", "mbox:/var/mail/joe", "spool"),
        (
            "vmail",
            120,
            "/var/vmail",
            "maildir:/srv/vmail/example.org/ann",
            "virtual",
        ),
        (
            "joe",
            1000,
            "/home/joe",
            "command:/usr/bin/procmail -a ext",
            "procmail",
        ),
        (
            "joe",
            1000,
            "/home/joe",
            "command:/etc/cursus/lda-commands/list",
            "smrsh",
        ),
        ("root", 0, "/root", "mbox:/var/mail/root", "root-spool"),
    ];
    for (user, uid, home, dest, rule) in table {
        let d = decide(&p, user, *uid, home, dest);
        assert_eq!(allowed_by(&d), Some(*rule), "{user} {dest}: {d}");
    }
}

#[test]
fn refused_destinations_name_the_attack() {
    let p = system();
    use Refusal::*;
    let table: &[(&str, &str, u32, &str, &str, Refusal)] = &[
        (
            "system file",
            "joe",
            1000,
            "/home/joe",
            "mbox:/etc/passwd",
            NotListed,
        ),
        (
            "other user's mailbox",
            "joe",
            1000,
            "/home/joe",
            "mbox:/var/mail/ann",
            NotListed,
        ),
        (
            "other user's maildir",
            "joe",
            1000,
            "/home/joe",
            "maildir:/home/ann/Maildir",
            NotListed,
        ),
        (
            "prefix sibling",
            "vmail",
            1200,
            "/var/vmail",
            "maildir:/srv/vmailx/a",
            NotListed,
        ),
        (
            "virtual tree as another user",
            "joe",
            1000,
            "/home/joe",
            "maildir:/srv/vmail/a",
            NotListed,
        ),
        (
            "maildir rule used for mbox",
            "joe",
            1000,
            "/home/joe",
            "mbox:/home/joe/Maildir",
            NotListed,
        ),
        (
            "mailbox rule used for a command",
            "joe",
            1000,
            "/home/joe",
            "command:/home/joe/Maildir/x",
            NotListed,
        ),
        (
            "command not listed",
            "joe",
            1000,
            "/home/joe",
            "command:/bin/sh",
            NotListed,
        ),
        (
            "command directory itself",
            "joe",
            1000,
            "/home/joe",
            "command:/etc/cursus/lda-commands",
            NotListed,
        ),
        (
            "arguments to a bare command",
            "joe",
            1000,
            "/home/joe",
            "command:/etc/cursus/lda-commands/x -f",
            NotListed,
        ),
        (
            "root without a naming rule",
            "toor",
            0,
            "/root",
            "maildir:/root/Maildir",
            Root,
        ),
        (
            "system account",
            "daemon",
            1,
            "/usr/sbin",
            "mbox:/var/mail/daemon",
            BelowUidFloor {
                uid: 1,
                min_uid: 1000,
            },
        ),
        (
            "user name climbing out",
            "../etc",
            1000,
            "/home/x",
            "mbox:/var/mail/x",
            BadUserName,
        ),
        (
            "user name with a slash",
            "a/b",
            1000,
            "/home/x",
            "mbox:/var/mail/a/b",
            BadUserName,
        ),
        (
            "shell metacharacter",
            "joe",
            1000,
            "/home/joe",
            "command:/usr/bin/procmail ;rm",
            UnsafeArgument {
                index: 1,
                why: "contains a shell metacharacter or space",
            },
        ),
        (
            "command substitution",
            "joe",
            1000,
            "/home/joe",
            "command:/usr/bin/procmail -a $(id)",
            UnsafeArgument {
                index: 2,
                why: "contains a shell metacharacter or space",
            },
        ),
        ("home is /", "joe", 1000, "/", "maildir:/Maildir", NotListed),
        (
            "relative home",
            "joe",
            1000,
            "home/joe",
            "maildir:/home/joe/Maildir",
            NotListed,
        ),
        (
            "home with ..",
            "joe",
            1000,
            "/home/../etc",
            "maildir:/etc/Maildir",
            NotListed,
        ),
    ];
    for (what, user, uid, home, dest, want) in table {
        match decide(&p, user, *uid, home, dest) {
            Decision::Refused { reason, .. } => assert_eq!(reason, *want, "{what}"),
            d => panic!("{what}: {d}"),
        }
    }
}

#[test]
fn refusal_explains_every_rule() {
    let d = decide(&system(), "joe", 1000, "/home/joe", "mbox:/var/mail/ann");
    let text = d.to_string();
    assert!(text.starts_with("refused: no rule allows"), "{text}");
    assert!(
        text.contains("rule `spool` (lda.toml:10): not /var/mail/joe"),
        "{text}"
    );
    assert!(
        text.contains("rule `home-maildir` (lda.toml:4): another kind"),
        "{text}"
    );
    assert!(
        text.contains("rule `virtual` (lda.toml:15): another kind"),
        "{text}"
    );
}

#[test]
fn errors_have_positions_and_suggestions() {
    let table: &[(&str, &str)] = &[
        (
            "min_ui = 5\n",
            "f:1:1: unknown key `min_ui`; did you mean `min_uid`?",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"/var/mail/${user}\"\nsubtre = true\n",
            "f:4:1: unknown key `subtre`; did you mean `subtree`?",
        ),
        (
            "[[allow]]\nkind = \"maildri\"\npath = \"~/Maildir\"\n",
            "f:2:8: unknown kind `maildri`; did you mean `maildir`?",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"var/mail\"\n",
            "f:3:8: \"var/mail\" is neither absolute (`/...`) nor in the user's home (`~/...`)",
        ),
        (
            "[[allow]]\nkind = \"maildir\"\npath = \"~/Maildir/../..\"\n",
            "f:3:8: \"~/Maildir/../..\": the path has a `..` component",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"/var/mail/${USER}\"\n",
            "f:3:8: unknown variable `${USER}`; the only variable is `${user}`",
        ),
        (
            "[[allow]]\nkind = \"command\"\npath = \"~/bin/x\"\n",
            "f:3:8: a command must be named by an absolute path, not one in the user's home",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"/a\"\narguments = true\n",
            "f:4:13: `arguments` applies only to rules of kind `command`",
        ),
        (
            "[[allow]]\nname = \"a\"\nkind = \"mbox\"\npath = \"/a\"\n[[allow]]\nname = \"a\"\nkind = \"mbox\"\npath = \"/b\"\n",
            "f:5:1: a rule named `a` is already defined",
        ),
        ("min_uid = -1\n", "f:1:11: "),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"~\"\nsubtree = true\n",
            "f:3:8: \"~\" would allow the whole home directory; name a directory inside it",
        ),
        (
            "[[allow]]\nkind = \"maildir\"\npath = \"/\"\nsubtree = true\n",
            "f:3:8: \"/\" would allow the whole filesystem",
        ),
    ];
    for (text, want) in table {
        let got = parse_system(text, "f").expect_err(text).to_string();
        assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn every_semantic_error_is_reported() {
    let text = "[[allow]]\nkind = \"mbx\"\npath = \"rel\"\n";
    let errors = parse_system(text, "f").expect_err("two errors");
    assert_eq!(errors.0.len(), 2, "{errors}");
}

#[test]
fn user_refinement_removes_and_adds_inside_home() {
    let user = "remove = [\"spool\"]\n\n[[allow]]\nname = \"inbox\"\nkind = \"mbox\"\npath = \"~/mailbox\"\n";
    let p = parse_user(&system(), "joe", user, "/home/joe/.cursus-lda.toml").expect("valid");
    let d = decide(&p, "joe", 1000, "/home/joe", "mbox:/var/mail/joe");
    match &d {
        Decision::Refused { misses, .. } => assert!(
            misses.iter().any(|(r, _, m)| r == "spool"
                && *m
                    == Miss::Removed {
                        by: "/home/joe/.cursus-lda.toml".into()
                    }),
            "{d}"
        ),
        Decision::Allowed { .. } => panic!("removed rule still allows: {d}"),
    }
    let d = decide(&p, "joe", 1000, "/home/joe", "mbox:/home/joe/mailbox");
    assert_eq!(allowed_by(&d), Some("inbox"), "{d}");
    // The refinement is joe's alone.
    let d = decide(&p, "ann", 1001, "/home/joe", "mbox:/home/joe/mailbox");
    assert!(!d.is_allowed(), "{d}");
}

#[test]
fn user_rules_do_not_lift_the_uid_floor() {
    let user = "[[allow]]\nname = \"inbox\"\nkind = \"mbox\"\npath = \"~/mailbox\"\n";
    let p = parse_user(&system(), "daemon", user, "u").expect("valid");
    let d = decide(&p, "daemon", 1, "/usr/sbin", "mbox:/usr/sbin/mailbox");
    assert!(!d.is_allowed(), "{d}");
}

#[test]
fn user_refinement_errors() {
    let table: &[(&str, &str)] = &[
        (
            "remove = [\"spol\"]\n",
            "u:1:11: no system rule named `spol`; did you mean `spool`?",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"/var/mail/other\"\n",
            "u:3:8: a user's file may only allow destinations inside the home",
        ),
        (
            "[[allow]]\nkind = \"maildir\"\npath = \"~\"\nsubtree = true\n",
            "u:3:8: \"~\" would allow the whole home directory",
        ),
        (
            "[[allow]]\nkind = \"command\"\npath = \"/usr/bin/procmail\"\n",
            "u:2:8: a user's file may not allow commands",
        ),
        (
            "[[allow]]\nkind = \"mbox\"\npath = \"~/m\"\nusers = [\"root\"]\n",
            "u:4:9: a user's file may not name users",
        ),
        ("min_uid = 0\n", "u:1:1: unknown key `min_uid`"),
        (
            "[[allow]]\nname = \"spool\"\nkind = \"mbox\"\npath = \"~/m\"\n",
            "u:1:1: a rule named `spool` is already defined",
        ),
    ];
    for (text, want) in table {
        let got = parse_user(&system(), "joe", text, "u")
            .expect_err(text)
            .to_string();
        assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn empty_policy_refuses_everything() {
    let p = parse_system("", "empty").expect("valid");
    assert_eq!(p.min_uid, DEFAULT_MIN_UID);
    let d = decide(&p, "joe", 1000, "/home/joe", "maildir:/home/joe/Maildir");
    assert_eq!(
        d,
        Decision::Refused {
            reason: Refusal::NotListed,
            misses: vec![]
        }
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("Maildir".to_string()),
            Just("joe".to_string()),
            Just("vmail".to_string()),
            "[a-z.]{1,6}",
        ]
    }

    proptest! {
        /// Whatever path the MTA sends, an allowed mailbox lies at or below the rule's own
        /// expanded path, and nothing with `.`, `..` or an empty component is ever allowed.
        #[test]
        fn allowed_paths_stay_inside_their_rule(
            parts in proptest::collection::vec(component(), 0..6),
            kind in 0u8..3,
        ) {
            let text = format!("/{}", parts.join("/"));
            let path = MailPath::parse(&text);
            if text != "/" && parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
                prop_assert!(path.is_err(), "{text} parsed");
            }
            let Ok(path) = path else { return Ok(()) };
            let destination = match kind {
                0 => Destination::Maildir(path.clone()),
                1 => Destination::Mbox(path.clone()),
                _ => Destination::Mh(path.clone()),
            };
            let policy = system();
            let d = check(&policy, &Request { user: "joe", uid: 1000, home: "/home/joe", destination: &destination });
            if let Decision::Allowed { rule, .. } = d {
                let maildir = MailPath::parse("/home/joe/Maildir").expect("valid");
                let spool = MailPath::parse("/var/mail/joe").expect("valid");
                match rule.as_str() {
                    "home-maildir" => prop_assert!(path.is_at_or_below(&maildir)),
                    "spool" => prop_assert_eq!(&path, &spool),
                    other => prop_assert!(false, "joe allowed by {}", other),
                }
            }
        }
    }
}
