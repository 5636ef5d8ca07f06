//! `cursus address test` as an administrator runs it: the real binary, a routing
//! configuration and aliases file in a temporary directory, and the real user database
//! (`root` exists everywhere; `no-such-user-cursus-test` nowhere).

mod invocation;
use invocation::cursus;

/// A directory with `aliases` and `routing.toml`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("aliases"),
        "postmaster: root\nloop1: loop2\nloop2: loop1\nlog: \"|/usr/bin/logger -t mail\"\n",
    )
    .expect("aliases");
    std::fs::write(
        dir.path().join("routing.toml"),
        format!(
            r#"[routing]
local_domains = ["example.org"]

[[router]]
name = "aliases"
driver = "aliases"
file = "{d}/aliases"

[[router]]
name = "users"
driver = "localuser"

[[router]]
name = "partners"
driver = "manualroute"
domains = ["partner.example"]
senders = ["*@example.org"]
hosts = ["relay.partner.example"]
transport = "out"

[[router]]
name = "missing"
driver = "aliases"
domains = ["broken.example"]
file = "{d}/no-such-aliases"

[[transport]]
name = "local"
driver = "lda"
mailbox = "mbox:/var/mail/${{user}}"

[[transport]]
name = "out"
driver = "smtp"
"#
        ),
    )
    .expect("config");
    dir
}

#[test]
fn postmaster_is_aliased_to_root_and_delivered() {
    let dir = setup();
    let r = cursus(
        &[
            "address",
            "test",
            "--config",
            "routing.toml",
            "postmaster@example.org",
        ],
        dir.path(),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let aliases = dir.path().join("aliases").display().to_string();
    let want = format!(
        "routing postmaster@example.org from <> with routing.toml
postmaster@example.org
  router aliases (aliases): accepted: alias postmaster: root
  root@example.org
    router aliases (aliases): declined: no alias root in {aliases}
    router users (localuser): accepted: local user root (uid 0)
    => deliver to mbox:/var/mail/root as root (from the transport's mailbox) by transport local
deliveries:
  root@example.org -> mbox:/var/mail/root as root (from the transport's mailbox) [router users, transport local]
    via postmaster@example.org (aliases)
result: routable
"
    );
    assert_eq!(r.stdout, want);
    assert_eq!(r.stderr, "");
}

#[test]
fn unknown_users_and_loops_are_undeliverable() {
    let dir = setup();
    let r = cursus(
        &[
            "address",
            "test",
            "-c",
            "routing.toml",
            "no-such-user-cursus-test@example.org",
        ],
        dir.path(),
    );
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "  router users (localuser): declined: no local user no-such-user-cursus-test\n"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("failures:\n  no-such-user-cursus-test@example.org failed: 5.1.1 user unknown\nresult: undeliverable\n"), "{}", r.stdout);

    let r = cursus(
        &["address", "test", "-c", "routing.toml", "loop1@example.org"],
        dir.path(),
    );
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "=> loop: loop1@example.org already appears in its own redirect chain; this branch ends"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("5.4.6 every redirect of this address loops"),
        "{}",
        r.stdout
    );
}

#[test]
fn sender_conditions_and_commands() {
    let dir = setup();
    let args = ["address", "test", "-c", "routing.toml"];
    let r = cursus(
        &[&args[..], &["-f", "joe@example.org", "ann@partner.example"]].concat(),
        dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("ann@partner.example -> hosts relay.partner.example port 25 [router partners, transport out]"), "{}", r.stdout);
    let r = cursus(&[&args[..], &["ann@partner.example"]].concat(), dir.path());
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("skipped: sender <> is not in [*@example.org]"),
        "{}",
        r.stdout
    );
    let r = cursus(&[&args[..], &["log@example.org"]].concat(), dir.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("|/usr/bin/logger -t mail -> command:/usr/bin/logger -t mail as nobody (from aliases file"), "{}", r.stdout);
}

#[test]
fn a_missing_aliases_file_defers() {
    let dir = setup();
    let r = cursus(
        &["address", "test", "-c", "routing.toml", "x@broken.example"],
        dir.path(),
    );
    assert_eq!(r.code, 75, "{}", r.stdout);
    assert!(r.stdout.contains("deferred: 4.3.0"), "{}", r.stdout);
    assert!(
        r.stdout.ends_with("result: deferred (temporary failure)\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn configuration_errors_name_the_line_and_suggest() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[router]]\nname = \"users\"\ndriver = \"localuser\"\ntransprt = \"local\"\n",
    )
    .expect("write");
    let r = cursus(&["address", "test", "-c", "bad.toml", "root"], dir.path());
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "bad.toml:4:1: unknown key `transprt`; did you mean `transport`?\n"
    );
}

#[test]
fn built_in_defaults_route_root_and_refuse_strangers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = cursus(&["address", "test", "root"], dir.path());
    // /etc/aliases may send root elsewhere; either way something is routable locally.
    assert!(
        r.stdout
            .starts_with("routing root@localhost from <> with built-in defaults\n"),
        "{}",
        r.stdout
    );
    assert!(matches!(r.code, 0 | 2), "{}", r.stdout);
    let r = cursus(&["address", "test", "no-such-user-cursus-test"], dir.path());
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stdout.contains("5.1.1 user unknown"), "{}", r.stdout);
}
