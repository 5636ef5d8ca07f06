//! The cursusd(8) man page is generated from the argument definitions; this test fails when
//! docs/man/cursusd.8 no longer matches them. Regenerate with
//! `CURSUS_UPDATE_MAN=1 cargo test -p cursusd --test manpage`.

#[path = "../src/main.rs"]
#[allow(dead_code)]
mod main_args;

use clap::CommandFactory;

#[test]
fn man_page_matches_the_argument_definitions() {
    let mut generated = Vec::new();
    clap_mangen::Man::new(main_args::Args::command())
        .section("8")
        .render(&mut generated)
        .expect("render man page");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man/cursusd.8");
    if std::env::var_os("CURSUS_UPDATE_MAN").is_some() {
        std::fs::write(&path, &generated).expect("write man page");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run CURSUS_UPDATE_MAN=1 cargo test -p cursusd --test manpage",
        path.display()
    );
}

#[test]
fn cursus_toml_page_matches_the_parameter_table() {
    let generated = cursusd::parameters::manual(env!("CARGO_PKG_VERSION"));
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man/cursus.toml.5");
    if std::env::var_os("CURSUS_UPDATE_MAN").is_some() {
        std::fs::write(&path, &generated).expect("write man page");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run CURSUS_UPDATE_MAN=1 cargo test -p cursusd --test manpage",
        path.display()
    );
}
