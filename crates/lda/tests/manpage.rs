//! The cursus-lda(8) man pages are generated from the argument definitions: one page for
//! the command and one for every subcommand at every level (cursus-lda-policy-check(8),
//! cursus-lda-request-deliver(8), ...), as clap_mangen's `generate_to` names them, the
//! `help` subcommand left out. The test fails when a page in docs/man no longer matches,
//! when a page names a cursus-lda page that does not exist, or when a cursus-lda page in
//! docs/man belongs to no subcommand. Regenerate with
//! `CURSUS_UPDATE_MAN=1 cargo test -p cursus-lda --test manpage`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man")
}

/// Every page: file name and text.
fn generated() -> BTreeMap<String, Vec<u8>> {
    fn walk(cmd: &clap::Command, pages: &mut BTreeMap<String, Vec<u8>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, pages);
        }
        let man = clap_mangen::Man::new(cmd.clone()).section("8");
        let mut text = Vec::new();
        man.render(&mut text).expect("render man page");
        pages.insert(man.get_filename(), text);
    }
    let mut cmd = cursus_lda::Args::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = BTreeMap::new();
    walk(&cmd, &mut pages);
    pages
}

#[test]
fn man_pages_match_the_argument_definitions() {
    let pages = generated();
    let update = std::env::var_os("CURSUS_UPDATE_MAN").is_some();
    for (file, text) in &pages {
        let path = man_dir().join(file);
        if update {
            std::fs::write(&path, text).expect("write man page");
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == *text,
            "{} is out of date: run CURSUS_UPDATE_MAN=1 cargo test -p cursus-lda --test manpage",
            path.display()
        );
    }
    // No page left behind by a renamed or removed subcommand.
    for entry in std::fs::read_dir(man_dir()).expect("docs/man") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("cursus-lda") && name.ends_with(".8") {
            assert!(
                pages.contains_key(&name),
                "docs/man/{name} belongs to no subcommand"
            );
        }
    }
}

#[test]
fn every_page_a_man_page_names_exists() {
    let pages = generated();
    let top = String::from_utf8(pages["cursus-lda.8"].clone()).expect("utf8");
    for must in [
        "SO_PEERCRED",
        "SCM_RIGHTS",
        "EXIT STATUS",
        "LOGGING",
        "FILES",
    ] {
        assert!(top.contains(must), "cursus-lda.8 does not describe {must}");
    }
    for (file, text) in &pages {
        let text = String::from_utf8_lossy(text).replace("\\-", "-");
        for (at, _) in text.match_indices("cursus-lda") {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            let Some(section) = rest[end..].strip_prefix('(').and_then(|r| r.get(..1)) else {
                continue;
            };
            let page = format!("{}.{section}", &rest[..end]);
            // A generated page must be among those generated (the test above checks that
            // docs/man holds it); any other (cursus-lda-policy.5) must be in docs/man.
            assert!(
                pages.contains_key(&page) || man_dir().join(&page).is_file(),
                "{file} names {page}, which does not exist"
            );
        }
    }
}
