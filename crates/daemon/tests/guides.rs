//! Every TOML block in docs/guides/*.md is a configuration cursusd accepts: the daemon's
//! parser, the routing parser and the retry rules all read it (password files named in
//! them are swapped for one that exists here), so the guides cannot drift from the code.

#[test]
fn every_configuration_in_the_guides_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("relay.pass");
    std::fs::write(&pass, "secret\n").expect("write");
    let guides = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guides");
    let mut blocks = 0;
    for entry in std::fs::read_dir(&guides).expect("docs/guides") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("guide");
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or("");
            let block = block.replace("/etc/cursus/relay.pass", &pass.display().to_string());
            let name = format!("{}#{}", path.display(), i + 1);
            let config = cursusd::config::Config::parse(&block, &name, dir.path());
            assert!(config.is_ok(), "{name}: {config:?}");
            let routing = cursus_route::RoutingConfig::parse(&block, &name);
            assert!(routing.is_ok(), "{name}: {routing:?}");
            let retry = cursus_route::retry::RetryRules::parse(&block, &name, 86_400);
            assert!(retry.is_ok(), "{name}: {retry:?}");
            blocks += 1;
        }
    }
    assert!(blocks >= 2, "found {blocks} configurations");
}
