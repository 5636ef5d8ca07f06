//! The cursus-lda(8) man page is generated from the argument definitions; this test fails
//! when docs/man/cursus-lda.8 no longer matches them. Regenerate with
//! `CURSUS_UPDATE_MAN=1 cargo test -p cursus-lda --test manpage`.

use clap::CommandFactory;

#[test]
fn man_page_matches_the_argument_definitions() {
    let cmd = cursus_lda::Args::command();
    let mut generated = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut generated)
        .expect("render man page");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man/cursus-lda.8");
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
