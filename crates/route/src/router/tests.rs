//! Routing tests: one table row per behaviour, against a temporary aliases file and
//! virtual table, a map user database, map .forward entries and map include files.

use std::collections::HashMap;

use cursus_lda::protocol::ForwardEntry;
use cursus_lda::{Destination, MailPath};
use cursus_mail::{OutcomeKind, Sender};

use super::*;
use crate::aliases::{IncludeFile, MapIncludes};
use crate::forward::MapForwards;
use crate::routed::Summary;
use crate::user::MapUsers;

const ALIASES: &str = r#"postmaster: root
root: joe, /var/log/root-mail, "|/usr/bin/logger -t mail"
a: b
b: a
c: c, joe
list: :include:/lists/staff
self: :include:/lists/self
shell: "|/bin/sh -c 'rm -rf /'"
tilde: ~/x
relative: "|bin/x"
deep1: deep2
deep2: deep3
deep3: deep4
deep4: deep5
deep5: deep6
deep6: deep7
deep7: joe
fan: joe, joe@example.org, Joe
dir: /srv/archive/
"#;

const VIRTUAL: &str = "info@hosted.example joe
sales@hosted.example vmail maildir:/srv/vmail/${domain}/${local}
@shop.hosted.example vmail maildir:/srv/vmail/${domain}/${local}
broken@hosted.example ghost
";

struct Fixture {
    _dir: tempfile::TempDir,
    router: Router,
}

fn path(p: &str) -> MailPath {
    MailPath::parse(p).expect("valid path")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::write(dir.path().join("aliases"), ALIASES).expect("aliases");
    std::fs::write(dir.path().join("virtual"), VIRTUAL).expect("virtual");
    let text = format!(
        r#"
[routing]
local_domains = ["example.org", "localhost"]
max_depth = 5

[[router]]
name = "aliases"
driver = "aliases"
file = "{d}/aliases"

[[router]]
name = "forward"
driver = "forward"
verify = false

[[router]]
name = "localuser"
driver = "localuser"

[[router]]
name = "hosted"
driver = "virtual"
domains = ["hosted.example", "*.hosted.example"]
table = {{ file = "{d}/virtual" }}

[[router]]
name = "partners"
driver = "manualroute"
domains = ["partner.example"]
senders = ["*@example.org"]
hosts = ["mx1.partner.example", "mx2.partner.example"]
transport = "remote"

[[router]]
name = "internet"
driver = "dnslookup"
domains = ["re:.*\\.net"]
transport = "remote"

[[transport]]
name = "local"
driver = "lda"

[[transport]]
name = "remote"
driver = "smtp"
"#
    );
    let config = RoutingConfig::parse(&text, "test.toml").expect("test config");
    let users = MapUsers::new()
        .with("joe", 1000)
        .with("ann", 1001)
        .with("bob", 1002)
        .with("vmail", 5000)
        .failing("ldap");
    let mut forwards = MapForwards::default();
    forwards.forwards.insert(
        "ann".into(),
        vec![
            ForwardEntry::Local("ann".into()),
            ForwardEntry::Address("ann@partner.example".into()),
            ForwardEntry::Mailbox(path("/home/ann/archive")),
            ForwardEntry::Command("/usr/bin/procmail -a x".into()),
        ],
    );
    forwards
        .forwards
        .insert("bob".into(), vec![ForwardEntry::Address("Bob".into())]);
    let mut includes = HashMap::new();
    includes.insert(
        "/lists/staff".to_string(),
        IncludeFile {
            text: "joe@example.org\n\"|/usr/bin/archive\"\n".into(),
            owner: 1000,
        },
    );
    includes.insert(
        "/lists/self".to_string(),
        IncludeFile {
            text: ":include:/lists/self\n".into(),
            owner: 0,
        },
    );
    let world = World {
        users: Box::new(users),
        forwards: Box::new(forwards),
        includes: Box::new(MapIncludes(includes)),
    };
    Fixture {
        router: Router::new(config, world),
        _dir: dir,
    }
}

fn null() -> Sender {
    Sender::Null
}

/// Deliveries as `address -> target [router]` lines, failures as `address status reason`.
fn summary(r: &Routed) -> Vec<String> {
    let mut lines: Vec<String> = r
        .deliveries
        .iter()
        .map(|d| format!("{} -> {} [{}]", d.address, d.target.describe(), d.router))
        .collect();
    lines.extend(
        r.failures
            .iter()
            .map(|f| format!("{} {} {}", f.address, f.status, f.reason)),
    );
    lines
}

#[test]
fn table_of_routing_decisions() {
    let f = fixture();
    let rows: &[(&str, &[&str])] = &[
        (
            "joe@example.org",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
            ],
        ),
        (
            "<JOE@Example.ORG>",
            &[
                "JOE@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
            ],
        ),
        (
            "joe",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
            ],
        ),
        (
            "stranger@example.org",
            &["stranger@example.org 5.1.1 user unknown"],
        ),
        (
            "x@elsewhere.com",
            &["x@elsewhere.com 5.4.4 no router accepts domain elsewhere.com"],
        ),
        (
            "postmaster@example.org",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
                "/var/log/root-mail -> mbox:/var/log/root-mail as nobody (from aliases file ALIASES) [aliases]",
                "|/usr/bin/logger -t mail -> command:/usr/bin/logger -t mail as nobody (from aliases file ALIASES) [aliases]",
            ],
        ),
        (
            "dir@example.org",
            &[
                "/srv/archive/ -> maildir:/srv/archive as nobody (from aliases file ALIASES) [aliases]",
            ],
        ),
        (
            "a@example.org",
            &["a@example.org 5.4.6 every redirect of this address loops"],
        ),
        (
            "c@example.org",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
            ],
        ),
        (
            "list@example.org",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
                "|/usr/bin/archive -> command:/usr/bin/archive as nobody (from include file /lists/staff (owner uid 1000)) [aliases]",
            ],
        ),
        (
            "self@example.org",
            &["self@example.org 5.4.6 every redirect of this address loops"],
        ),
        (
            "shell@example.org",
            &[
                "|/bin/sh -c 'rm -rf /' 5.3.0 command \"/bin/sh -c 'rm -rf /'\" uses shell syntax; cursus never runs a shell (name a program)",
            ],
        ),
        (
            "tilde@example.org",
            &["~/x 5.3.0 file \"~/x\": `~/` means nothing in an aliases file"],
        ),
        (
            "relative@example.org",
            &["|bin/x 5.3.0 command \"bin/x\": the program must be an absolute path"],
        ),
        (
            "deep1@example.org",
            &["deep7@example.org 5.4.6 more than 5 levels of redirection"],
        ),
        (
            "fan@example.org",
            &[
                "joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [localuser]",
            ],
        ),
        (
            "bob@example.org",
            &["bob@example.org 5.4.6 every redirect of this address loops"],
        ),
        (
            "ldap@example.org",
            &["ldap@example.org 4.3.0 user database unreachable for \"ldap\""],
        ),
        (
            "info@hosted.example",
            &[
                "info@hosted.example -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [hosted]",
            ],
        ),
        (
            "sales@hosted.example",
            &[
                "sales@hosted.example -> maildir:/srv/vmail/hosted.example/sales as vmail (from the table of router hosted) [hosted]",
            ],
        ),
        (
            "Anyone@shop.hosted.example",
            &[
                "Anyone@shop.hosted.example -> maildir:/srv/vmail/shop.hosted.example/anyone as vmail (from the table of router hosted) [hosted]",
            ],
        ),
        (
            "..@shop.hosted.example",
            &[
                "..@shop.hosted.example 5.3.0 mailbox maildir:/srv/vmail/${domain}/${local}: the local \"..\" cannot be a path component",
            ],
        ),
        (
            "broken@hosted.example",
            &[
                "broken@hosted.example 4.3.5 router hosted: the value for broken@hosted.example names user ghost, who does not exist",
            ],
        ),
        (
            "nobody@hosted.example",
            &["nobody@hosted.example 5.4.4 no router accepts domain hosted.example"],
        ),
        (
            "x@mail.example.net",
            &["x@mail.example.net -> MX hosts of mail.example.net [internet]"],
        ),
        ("@example.org", &["@example.org 5.1.3 bad address syntax"]),
    ];
    let aliases = f.router.routers[0].config.clone();
    let Driver::Aliases { file, .. } = &aliases.driver else {
        panic!("first router is aliases");
    };
    let file = file.display().to_string();
    for (recipient, want) in rows {
        let routed = f.router.route(recipient, &null());
        let want: Vec<String> = want.iter().map(|w| w.replace("ALIASES", &file)).collect();
        assert_eq!(summary(&routed), want, "{recipient}\n{}", routed.render());
    }
}

#[test]
fn extensions_are_stripped_and_kept() {
    let f = fixture();
    let r = f.router.route("joe+lists@example.org", &null());
    assert_eq!(r.deliveries.len(), 1, "{}", r.render());
    let d = &r.deliveries[0];
    assert_eq!(d.extension.as_deref(), Some("lists"));
    assert_eq!(d.address, "joe+lists@example.org");
    assert_eq!(
        d.target,
        Target::Local {
            user: "joe".into(),
            destination: Destination::Maildir(path("/home/joe/Maildir")),
            authority: Authority::Mailbox,
        }
    );
    // An alias for the base name applies to every extension of it.
    let r = f.router.route("postmaster+x@example.org", &null());
    assert_eq!(r.deliveries.len(), 3, "{}", r.render());
}

#[test]
fn forward_keeps_the_users_identity_and_conditions_see_the_sender() {
    let f = fixture();
    let local = Sender::Address("joe@example.org".into());
    let r = f.router.route("ann@example.org", &local);
    let ann = |d: Destination| Target::Local {
        user: "ann".into(),
        destination: d,
        authority: Authority::Forward { user: "ann".into() },
    };
    let targets: Vec<&Target> = r.deliveries.iter().map(|d| &d.target).collect();
    assert_eq!(
        targets,
        [
            &Target::Local {
                user: "ann".into(),
                destination: Destination::Maildir(path("/home/ann/Maildir")),
                authority: Authority::Mailbox,
            },
            &Target::Remote(Remote::Hosts {
                hosts: vec!["mx1.partner.example".into(), "mx2.partner.example".into()],
                port: 25,
            }),
            &ann(Destination::Mbox(path("/home/ann/archive"))),
            &ann(Destination::Command {
                program: path("/usr/bin/procmail"),
                args: vec!["-a".into(), "x".into()],
            }),
        ],
        "{}",
        r.render()
    );
    assert_eq!(
        r.deliveries[0].chain,
        [Hop {
            address: "ann@example.org".into(),
            router: "forward".into()
        }]
    );
    assert!(
        r.render()
            .contains("a \\user target is not aliased or forwarded")
    );
    // The partner relay only takes mail from our own senders.
    let r = f.router.route("ann@example.org", &null());
    assert_eq!(r.summary(), Summary::Undeliverable);
    assert_eq!(
        r.failures[0].reason,
        "no router accepts domain partner.example"
    );
}

#[test]
fn verification_skips_routers_not_marked_for_it() {
    let f = fixture();
    let r = f.router.verify("ann@example.org", &null());
    assert_eq!(r.deliveries.len(), 1, "{}", r.render());
    assert_eq!(r.deliveries[0].router, "localuser");
    assert!(
        r.render()
            .contains("router forward (forward): skipped: not used to verify")
    );
}

#[test]
fn temporary_errors_defer_and_do_not_fall_through() {
    let f = fixture();
    let mut forwards = MapForwards::default();
    forwards.failing.push("joe".into());
    let world = World {
        users: Box::new(MapUsers::new().with("joe", 1000)),
        forwards: Box::new(forwards),
        includes: Box::new(MapIncludes::default()),
    };
    let router = Router::new(f.router.config.clone(), world);
    let r = router.route("joe@example.org", &null());
    assert_eq!(r.summary(), Summary::Temporary);
    assert!(
        r.deliveries.is_empty(),
        "must not fall through to localuser"
    );
    assert_eq!(r.failures[0].status.to_string(), "4.3.0");
    // An aliases file that breaks defers every address it might hold.
    let aliases = match &f.router.config.routers[0].driver {
        Driver::Aliases { file, .. } => file.clone(),
        _ => unreachable!("aliases first"),
    };
    std::fs::write(&aliases, "root joe\n").expect("break the file");
    let r = f.router.route("joe@example.org", &null());
    assert_eq!(r.summary(), Summary::Temporary, "{}", r.render());
    assert!(
        r.failures[0]
            .reason
            .ends_with("aliases:1: no `:` after the alias name")
    );
    assert!(f.router.check()[0].starts_with("router aliases: "));
}

#[test]
fn sqlite_virtual_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("virtual.db");
    let conn = rusqlite::Connection::open(&db).expect("create");
    conn.execute_batch(
        "CREATE TABLE virtual (address TEXT PRIMARY KEY, target TEXT);
         INSERT INTO virtual VALUES ('@hosted.example', 'vmail mbox:/srv/mail/${domain}/${local}');
         INSERT INTO virtual VALUES ('boss@hosted.example', 'joe');",
    )
    .expect("fill");
    let text = format!(
        r#"
[[router]]
name = "hosted"
driver = "virtual"
domains = ["hosted.example"]
table = {{ sqlite = "{}", query = "SELECT target FROM virtual WHERE address = ?" }}

[[transport]]
name = "local"
driver = "lda"
mailbox = "mbox:/var/mail/${{user}}"
"#,
        db.display()
    );
    let config = RoutingConfig::parse(&text, "t.toml").expect("config");
    let world = World {
        users: Box::new(MapUsers::new().with("joe", 1000).with("vmail", 5000)),
        forwards: Box::new(MapForwards::default()),
        includes: Box::new(MapIncludes::default()),
    };
    let router = Router::new(config, world);
    assert_eq!(router.check(), Vec::<String>::new());
    let rows = [
        (
            "boss@hosted.example",
            "boss@hosted.example -> mbox:/var/mail/joe as joe (from the transport's mailbox) [hosted]",
        ),
        (
            "boss+x@hosted.example",
            "boss+x@hosted.example -> mbox:/var/mail/joe as joe (from the transport's mailbox) [hosted]",
        ),
        (
            "ann@hosted.example",
            "ann@hosted.example -> mbox:/srv/mail/hosted.example/ann as vmail (from the table of router hosted) [hosted]",
        ),
    ];
    for (recipient, want) in rows {
        let r = router.route(recipient, &null());
        assert_eq!(summary(&r), [want], "{}", r.render());
    }
    let r = router.route("boss+x@hosted.example", &null());
    assert!(
        r.render().contains("boss+x@hosted.example"),
        "{}",
        r.render()
    );
}

#[test]
fn a_table_can_be_supplied_in_memory() {
    let f = fixture();
    let table = crate::table::MapTable::from_pairs(&[("@hosted.example", "ann")]);
    let router =
        Router::new(f.router.config.clone(), World::system()).with_table("hosted", Box::new(table));
    // `ann` is not a system user, so the value names nobody: deferred with the reason.
    let r = router.route("x@hosted.example", &null());
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].reason.contains("ann"), "{}", r.render());
}

#[test]
fn fan_out_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut aliases = String::new();
    // Each level doubles: 2^12 addresses, far more than max_addresses = 50.
    for i in 0..12 {
        aliases.push_str(&format!("l{i}: l{}a, l{}b\n", i + 1, i + 1));
        aliases.push_str(&format!("l{i}a: l{}\nl{i}b: l{}\n", i + 1, i + 1));
    }
    std::fs::write(dir.path().join("aliases"), aliases).expect("write");
    let text = format!(
        "[routing]\nmax_addresses = 50\nmax_depth = 100\n[[router]]\nname = \"a\"\ndriver = \"aliases\"\nfile = \"{}/aliases\"\n[[transport]]\nname = \"local\"\ndriver = \"lda\"\n",
        dir.path().display()
    );
    let config = RoutingConfig::parse(&text, "t").expect("config");
    let router = Router::new(config, World::system());
    let r = router.route("l0@localhost", &null());
    assert!(r.deliveries.is_empty());
    let limit: Vec<&str> = r
        .failures
        .iter()
        .filter(|f| f.status.to_string() == "5.4.6")
        .map(|f| f.reason.as_str())
        .collect();
    assert_eq!(limit, ["expands to more than 50 addresses"]);
    assert!(r.failures.len() < 60, "{}", r.failures.len());
}

#[test]
fn the_report_shows_routers_tree_and_result() {
    let f = fixture();
    let r = f.router.route("c@example.org", &null());
    let text = r.render();
    let want = "c@example.org
  router aliases (aliases): accepted: alias c: c, joe
  c@example.org
    => loop: c@example.org already appears in its own redirect chain; this branch ends
  joe@example.org
    router aliases (aliases): declined: no alias joe in ALIASES
    router forward (forward): declined: joe has no .forward
    router localuser (localuser): accepted: local user joe (uid 1000)
    => deliver to maildir:/home/joe/Maildir as joe (from the transport's mailbox) by transport local
deliveries:
  joe@example.org -> maildir:/home/joe/Maildir as joe (from the transport's mailbox) [router localuser, transport local]
    via c@example.org (aliases)
result: routable
";
    let file = match &f.router.config.routers[0].driver {
        Driver::Aliases { file, .. } => file.display().to_string(),
        _ => unreachable!("aliases first"),
    };
    assert_eq!(text, want.replace("ALIASES", &file));
    assert_eq!(
        r.failures
            .iter()
            .filter(|f| f.kind == OutcomeKind::Permanent)
            .count(),
        0
    );
}

#[test]
fn a_router_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Router>();
}

#[test]
fn local_and_routed_domains_for_reception() {
    let f = fixture();
    // (address, in a local domain, some router names its domain)
    let table = [
        ("joe@example.org", true, true),
        ("joe@LOCALHOST", true, true),
        ("joe", true, true),
        ("<joe@example.org>", true, true),
        ("x@hosted.example", false, true),
        ("x@a.hosted.example", false, true),
        ("x@partner.example", false, true),
        ("x@mx.example.net", false, true),
        ("x@elsewhere.example", false, false),
        ("x@", false, false),
    ];
    for (address, local, routed) in table {
        assert_eq!(f.router.in_local_domain(address), local, "{address}");
        assert_eq!(f.router.routes_domain(address), routed, "{address}");
    }
}
