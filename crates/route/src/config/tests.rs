//! Configuration tests: the example file, the defaults, and each error with its line,
//! column and suggestion.

use super::*;

const EXAMPLE: &str = include_str!("../../../../docs/examples/routing.toml");

fn errors(text: &str) -> Vec<String> {
    match RoutingConfig::parse(text, "cursus.toml") {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const TRANSPORTS: &str = "
[[transport]]
name = \"local\"
driver = \"lda\"

[[transport]]
name = \"remote\"
driver = \"smtp\"
";

#[test]
fn the_example_file_parses() {
    let c = RoutingConfig::parse(EXAMPLE, "routing.toml").expect("example parses");
    let names: Vec<&str> = c.routers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "system_aliases",
            "userforward",
            "localuser",
            "hosted",
            "partners",
            "internet"
        ]
    );
    assert_eq!(c.qualify_domain, "example.org");
    let aliases = &c.routers[0];
    assert_eq!(aliases.transport, "local", "first lda transport by default");
    let domains = aliases
        .conditions
        .domains
        .as_ref()
        .expect("local domains by default");
    assert_eq!(domains.written, ["example.org", "localhost"]);
    assert!(!c.routers[1].verify);
    assert!(
        c.routers[5].conditions.domains.is_none(),
        "dnslookup sees every domain"
    );
    assert_eq!(c.routers[4].transport, "remote");
    match &c.routers[3].driver {
        Driver::Virtual {
            table: TableSpec::Sqlite { query, .. },
        } => assert!(query.contains('?')),
        other => panic!("{other:?}"),
    }
}

#[test]
fn single_user_defaults_are_valid() {
    let c = RoutingConfig::single_user();
    assert_eq!(c.routers.len(), 2);
    assert_eq!(c.local_domains, ["localhost"]);
    assert_eq!(c.transports[0].name, "local");
    assert!(matches!(
        c.routers[0].driver,
        Driver::Aliases { optional: true, .. }
    ));
}

#[test]
fn system_defaults_add_the_users_forward_files() {
    let c = RoutingConfig::system();
    let names: Vec<&str> = c.routers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["aliases", "forward", "localuser"]);
    assert!(matches!(c.routers[1].driver, Driver::Forward));
    assert!(!c.routers[1].verify, "never read at RCPT time");
}

#[test]
fn errors_have_lines_and_suggestions() {
    let rows: &[(&str, &str)] = &[
        (
            "[[router]]\nname = \"a\"\ndriver = \"localuser\"\ndomain = [\"x\"]\n",
            "cursus.toml:4:1: unknown key `domain`; did you mean `domains`?",
        ),
        (
            "[routing]\nlocal_domain = [\"x\"]\n",
            "cursus.toml:2:1: unknown key `local_domain`; did you mean `local_domains`?",
        ),
        (
            "[routers]\n",
            "cursus.toml:1:2: unknown key `routers`; did you mean `router`?",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(errors(text), vec![want.to_string()], "{text}");
    }
}

#[test]
fn validation_reports_every_problem() {
    let text = format!(
        "{TRANSPORTS}
[[router]]
name = \"a\"
driver = \"localusr\"

[[router]]
name = \"b\"
driver = \"localuser\"
transport = \"locl\"

[[router]]
name = \"c\"
driver = \"localuser\"
file = \"/etc/aliases\"
local_parts = [\"re:(unclosed\"]

[[router]]
name = \"d\"
driver = \"dnslookup\"
transport = \"local\"

[[router]]
name = \"e\"
driver = \"aliases\"

[[router]]
name = \"f\"
driver = \"aliases\"
file = \"/etc/aliases\"
transport = \"remote\"

[[router]]
name = \"g\"
driver = \"localuser\"

[[router]]
name = \"g\"
driver = \"virtual\"
table = {{ sqlite = \"/x.db\", query = \"SELECT 1\" }}
"
    );
    let got = errors(&text);
    let want = [
        "cursus.toml:12:10: unknown router driver `localusr`; did you mean `localuser`?",
        "cursus.toml:17:13: unknown transport `locl`; did you mean `local`?",
        "cursus.toml:22:8: `file` does not apply to a localuser router",
        "cursus.toml:23:16: bad regular expression \"(unclosed\": unclosed group",
        "cursus.toml:28:13: transport `local` is lda: a remote router needs an smtp or lmtp transport",
        "cursus.toml:32:10: an aliases router needs `file`",
        "cursus.toml:38:13: transport `remote` is smtp: file and command targets are delivered by an lda transport",
        "cursus.toml:45:8: a router named `g` is already defined",
        "cursus.toml:47:9: the query must have exactly one `?` (the address)",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "got {g}\nwant {w}");
    }
}

#[test]
fn transport_errors() {
    let text = "
[[transport]]
name = \"local\"
driver = \"lda\"
mailbox = \"maildir:Maildir\"

[[transport]]
name = \"store\"
driver = \"lmtp\"

[[transport]]
name = \"x\"
driver = \"smtpp\"
mailbox = \"maildir:~/M\"
";
    let got = errors(text);
    let want = [
        "cursus.toml:5:11: \"Maildir\": the path is not absolute",
        "cursus.toml:9:10: an lmtp transport needs `hosts`",
        "cursus.toml:13:10: unknown transport driver `smtpp`; did you mean `smtp`?",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "got {g}\nwant {w}");
    }
}

#[test]
fn a_router_without_a_suitable_transport_is_an_error() {
    let got = errors("[[router]]\nname = \"a\"\ndriver = \"localuser\"\n");
    assert_eq!(
        got,
        [
            "cursus.toml:3:10: no lda transport is defined; add a [[transport]] and name it with `transport =`"
        ]
    );
}
