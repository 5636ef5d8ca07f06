//! The cursus(1) man pages (cursus.1, cursus-sieve.1, cursus-sieve-check.1,
//! cursus-sieve-test.1, cursus-address.1, cursus-address-test.1, one per visible subcommand) are generated from the argument
//! definitions; this test fails when docs/man/ no longer matches them. Regenerate with
//! `CURSUS_UPDATE_MAN=1 cargo test -p cursus-cli --test manpage`.

use std::path::Path;

use clap::CommandFactory;

#[test]
fn man_pages_match_the_argument_definitions() {
    let generated = tempfile::tempdir().expect("temporary directory");
    clap_mangen::generate_to(cursus_cli::Cli::command(), generated.path()).expect("render pages");
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man");
    let update = std::env::var_os("CURSUS_UPDATE_MAN").is_some();
    let mut names: Vec<String> = std::fs::read_dir(generated.path())
        .expect("read generated pages")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"cursus-sieve-check.1".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"cursus-address-test.1".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("bench")),
        "hidden subcommand got a page: {names:?}"
    );
    let mut stale = Vec::new();
    for name in &names {
        let fresh = std::fs::read(generated.path().join(name)).expect("read generated page");
        if update {
            std::fs::write(man.join(name), &fresh).expect("write man page");
        } else if std::fs::read(man.join(name)).unwrap_or_default() != fresh {
            stale.push(name.clone());
        }
    }
    // Pages of subcommands that no longer exist.
    for entry in std::fs::read_dir(&man).expect("read docs/man") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let ours = name == "cursus.1"
            || name.starts_with("cursus-sieve")
            || name.starts_with("cursus-address");
        if ours && !names.contains(&name) {
            if update {
                std::fs::remove_file(man.join(&name)).expect("remove stale page");
            } else {
                stale.push(name);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs/man/{{{}}} out of date: run CURSUS_UPDATE_MAN=1 cargo test -p cursus-cli --test manpage",
        stale.join(",")
    );
}
