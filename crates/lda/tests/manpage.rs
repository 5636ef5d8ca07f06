//! The cursus-lda(8) man pages are generated from the argument definitions (the command and
//! its `serve`, `request` and `policy` subcommands); this test fails when a page in docs/man
//! no longer matches them. Regenerate with
//! `CURSUS_UPDATE_MAN=1 cargo test -p cursus-lda --test manpage`.

use clap::CommandFactory;

fn check(cmd: clap::Command, file: &str) {
    let mut generated = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut generated)
        .expect("render man page");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/man")
        .join(file);
    if std::env::var_os("CURSUS_UPDATE_MAN").is_some() {
        std::fs::write(&path, &generated).expect("write man page");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run CURSUS_UPDATE_MAN=1 cargo test -p cursus-lda --test manpage",
        path.display()
    );
}

#[test]
fn man_pages_match_the_argument_definitions() {
    let cmd = cursus_lda::Args::command();
    check(cmd.clone(), "cursus-lda.8");
    for (sub, name) in [
        ("serve", "cursus-lda-serve"),
        ("request", "cursus-lda-request"),
        ("policy", "cursus-lda-policy"),
    ] {
        let found = cmd
            .find_subcommand(sub)
            .expect("subcommand exists")
            .clone()
            .name(name);
        check(found, &format!("{name}.8"));
    }
}
