//! cursus-deliver end to end: the binary, its exit codes, and what lands on disk.
//! Each refusal test names the attack it stops.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::*;

fn only_file(dir: &std::path::Path) -> Vec<u8> {
    let f = files(dir);
    assert_eq!(f.len(), 1, "expected one file in {}: {f:?}", dir.display());
    std::fs::read(&f[0]).expect("read")
}

#[test]
fn maildir_delivery_adds_trace_headers_and_stores_lf() {
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut cmd = deliver(&s);
    cmd.args([
        "-f",
        "alice@example.org",
        "-a",
        "joe+x@example.net",
        "-r",
        "joe@example.net",
    ]);
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stored = only_file(&md.join("new"));
    let mut want = b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n".to_vec();
    want.extend(message_lf());
    assert_eq!(
        String::from_utf8_lossy(&stored),
        String::from_utf8_lossy(&want)
    );
    assert!(files(&md.join("tmp")).is_empty());
    let f = &files(&md.join("new"))[0];
    let meta = std::fs::metadata(f).expect("stat");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), delivery_ids().0);
    let name = f.file_name().expect("name").to_string_lossy().into_owned();
    let size = stored.len();
    let lfs = stored.iter().filter(|&&b| b == b'\n').count();
    assert!(
        name.ends_with(&format!(",S={size},W={}", size + lfs)),
        "{name}"
    );
    for d in ["tmp", "new", "cur"] {
        assert_eq!(
            std::fs::metadata(md.join(d)).expect("dir").mode() & 0o777,
            0o700,
            "{d}"
        );
    }
}

#[test]
fn from_line_is_dropped_and_gives_the_sender() {
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut input = b"From bounce@example.org  Sun Nov 22 08:59:06 2026\n".to_vec();
    input.extend_from_slice(MESSAGE);
    let mut cmd = deliver(&s);
    cmd.args(["-r", "joe@example.net"])
        .arg("--maildir")
        .arg(&md);
    let out = run(cmd, &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stored = only_file(&md.join("new"));
    assert!(stored.starts_with(
        b"Return-Path: <bounce@example.org>\nDelivered-To: joe@example.net\nFrom: Alice"
    ));
    assert!(!stored.windows(12).any(|w| w == b"From bounce@"));
}

#[test]
fn environment_of_opensmtpd_and_mta_prepended_headers() {
    // OpenSMTPD prepends Return-Path and Delivered-To itself and sets SENDER/RECIPIENT.
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut input = b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n".to_vec();
    input.extend_from_slice(b"Received: from x by y\n");
    input.extend(message_lf());
    let mut cmd = deliver(&s);
    cmd.env("SENDER", "alice@example.org")
        .env("RECIPIENT", "joe@example.net");
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(only_file(&md.join("new")), input, "nothing added twice");
}

#[test]
fn null_sender_forms() {
    for (args, env) in [
        (vec!["-f", ""], None),
        (vec!["-f", "<>"], None),
        (vec!["-f", "MAILER-DAEMON"], None),
        (vec![], Some("")),
    ] {
        let s = Scratch::new();
        let md = s.path("Maildir");
        let mut cmd = deliver(&s);
        cmd.args(&args)
            .args(["-r", "joe@example.net"])
            .arg("--maildir")
            .arg(&md);
        if let Some(v) = env {
            cmd.env("SENDER", v);
        }
        let out = run(cmd, MESSAGE);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(
            only_file(&md.join("new")).starts_with(b"Return-Path: <>\n"),
            "{args:?}"
        );
    }
}

#[test]
fn delivered_to_loop_is_refused_with_5_4_6() {
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut input = b"Received: from a by b\nDelivered-To: Joe@Example.NET\n".to_vec();
    input.extend(message_lf());
    let mut cmd = deliver(&s);
    cmd.args(["-r", "joe@example.net"])
        .arg("--maildir")
        .arg(&md);
    let out = run(cmd, &input);
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).starts_with("5.4.6 "), "{}", stderr(&out));
    assert!(files(&md.join("new")).is_empty());
}

#[test]
fn bad_input_table() {
    let mut one_mb_line = b"Subject: long\n\n".to_vec();
    one_mb_line.extend(std::iter::repeat_n(b'x', 1 << 20));
    one_mb_line.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("empty stdin", Vec::new(), 65),
        (
            "only a From_ line",
            b"From a@b  Sun Nov 22 08:59:06 2026\n".to_vec(),
            65,
        ),
        (
            "no header/body separator",
            b"just some text\nand more\n".to_vec(),
            0,
        ),
        ("NUL bytes", b"Subject: nul\n\nbin\0ary\0\n".to_vec(), 0),
        ("1 MB line", one_mb_line, 0),
        ("no final newline", b"Subject: x\n\nno newline".to_vec(), 0),
    ];
    for (name, input, want) in cases {
        let s = Scratch::new();
        let md = s.path("Maildir");
        let mut cmd = deliver(&s);
        cmd.args(["-f", "a@b", "-r", "joe@example.net"])
            .arg("--maildir")
            .arg(&md);
        let out = run(cmd, &input);
        assert_eq!(code(&out), want, "{name}: {}", stderr(&out));
        if want == 0 {
            let stored = only_file(&md.join("new"));
            let prefix = b"Return-Path: <a@b>\nDelivered-To: joe@example.net\n";
            assert!(stored.starts_with(prefix), "{name}");
            let rest = &stored[prefix.len()..];
            if input.starts_with(b"just") {
                // A separator keeps the text out of the header section.
                assert_eq!(&rest[..1], b"\n", "{name}");
                assert_eq!(&rest[1..], &input[..], "{name}");
            } else {
                assert_eq!(rest, &input[..], "{name}");
            }
        } else {
            assert!(
                stderr(&out).starts_with("5.6.0 "),
                "{name}: {}",
                stderr(&out)
            );
            assert!(files(&md.join("new")).is_empty(), "{name}");
        }
    }
}

#[test]
fn folder_delivery_creates_maildirplusplus_folder() {
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut cmd = deliver(&s);
    cmd.args(["-m", "Lists.rust"]).arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let folder = md.join(".Lists.rust");
    assert!(folder.join("maildirfolder").is_file());
    assert_eq!(files(&folder.join("new")).len(), 1);
    assert!(files(&md.join("new")).is_empty());
}

#[test]
fn hostile_folder_names_go_to_inbox_and_create_nothing_outside() {
    // Attack: an address extension ("joe+../../x") chosen by a remote sender turns into
    // -m ${extension} and tries to make a directory outside the Maildir.
    for name in ["../escape", "a/b", ".hidden", "x\ny", "..", "a..b"] {
        let s = Scratch::new();
        let md = s.path("Maildir");
        let mut cmd = deliver(&s);
        cmd.arg("-m").arg(name).arg("--maildir").arg(&md);
        let out = run(cmd, MESSAGE);
        assert_eq!(code(&out), 0, "{name:?}: {}", stderr(&out));
        assert_eq!(files(&md.join("new")).len(), 1, "{name:?} went to INBOX");
        let top: Vec<_> = files(s.dir.path())
            .into_iter()
            .map(|p| p.file_name().map(|n| n.to_owned()))
            .collect();
        assert_eq!(
            top.len(),
            2,
            "{name:?}: only Maildir and system.toml in scratch: {top:?}"
        );
    }
}

#[test]
fn mbox_delivery_quotes_from_lines() {
    let s = Scratch::new();
    let mbox = s.path("mbox");
    for _ in 0..2 {
        let mut cmd = deliver(&s);
        cmd.args(["-f", "alice@example.org"])
            .arg("--mbox")
            .arg(&mbox);
        let out = run(cmd, MESSAGE);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let data = std::fs::read(&mbox).expect("mbox");
    let text = String::from_utf8_lossy(&data);
    assert_eq!(
        text.matches("\nFrom alice@example.org  ").count()
            + usize::from(text.starts_with("From alice@example.org  ")),
        2,
        "{text}"
    );
    assert_eq!(text.matches("\n>From the start").count(), 2);
    assert!(text.ends_with("\n\n"));
}

#[test]
fn symlinked_mbox_is_refused() {
    // Attack: a user plants mbox -> /some/victim file so the MDA appends attacker text to it.
    let s = Scratch::new();
    let victim = s.file("victim", b"precious\n");
    let link = s.path("mbox");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let mut cmd = deliver(&s);
    cmd.arg("--mbox").arg(&link);
    let out = run(cmd, MESSAGE);
    assert_ne!(code(&out), 0);
    assert!(matches!(code(&out), 75 | 77), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
}

#[test]
fn hard_linked_mbox_is_refused() {
    // Attack (CVE-2010-2023): a hard link to another file in a sticky spool directory.
    let s = Scratch::new();
    let victim = s.file("victim", b"precious\n");
    let link = s.path("mbox");
    std::fs::hard_link(&victim, &link).expect("link");
    let mut cmd = deliver(&s);
    cmd.arg("--mbox").arg(&link);
    let out = run(cmd, MESSAGE);
    assert!(matches!(code(&out), 75 | 77), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
}

#[test]
fn symlinked_maildir_new_is_refused() {
    // Attack: new/ pointed at another directory so deliveries land there.
    let s = Scratch::new();
    let md = s.mkdir("Maildir");
    s.mkdir("Maildir/tmp");
    s.mkdir("Maildir/cur");
    let elsewhere = s.mkdir("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, md.join("new")).expect("symlink");
    let mut cmd = deliver(&s);
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert!(matches!(code(&out), 75 | 77), "{}", stderr(&out));
    assert!(files(&elsewhere).is_empty());
    assert!(files(&md.join("tmp")).is_empty());
}

#[test]
fn mbox_owned_by_someone_else_is_refused() {
    // Attack: a mailbox pre-created by another user (who can then read the victim's mail).
    if !is_root() {
        eprintln!("SKIP mbox_owned_by_someone_else_is_refused: needs root to chown");
        return;
    }
    let s = Scratch::new();
    let mbox = s.file("mbox", b"");
    let (uid, gid) = ensure_user(OTHER);
    std::os::unix::fs::chown(&mbox, Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let mut cmd = deliver(&s);
    cmd.arg("--mbox").arg(&mbox);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("4."), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&mbox).expect("stat").len(), 0);
}

#[test]
fn read_only_maildir_is_a_temporary_failure() {
    let s = Scratch::new();
    let md = s.mkdir("Maildir");
    for d in ["tmp", "new", "cur"] {
        s.mkdir(&format!("Maildir/{d}"));
    }
    // new/ is where the message is written (an unnamed file), tmp/ where it is written
    // without O_TMPFILE: neither writable, the delivery waits.
    for d in ["tmp", "new"] {
        std::fs::set_permissions(md.join(d), std::fs::Permissions::from_mode(0o500))
            .expect("chmod");
    }
    let mut cmd = deliver(&s);
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("4."), "{}", stderr(&out));
    assert!(files(&md.join("new")).is_empty());
    assert!(files(&md.join("tmp")).is_empty());
}

#[test]
fn over_quota_bounces_or_defers_by_configuration() {
    let s = Scratch::new();
    let md = s.mkdir("Maildir");
    s.file("Maildir/maildirsize", b"100S\n90 1\n");
    let mut cmd = deliver(&s);
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("5.2.2 "), "{}", stderr(&out));

    let mut cmd = deliver(&s);
    cmd.args(["-o", "quota_full=temporary"])
        .arg("--maildir")
        .arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("4.2.2 "), "{}", stderr(&out));
    assert!(files(&md.join("new")).is_empty());
}

#[test]
fn configuration_errors_exit_78_with_file_and_line() {
    let s = Scratch::new();
    let cfg = system_config(
        &s,
        "bad.toml",
        b"fsync = true\ndestinaton = \"mbox:/tmp/x\"\n",
    );
    let cmd = deliver_with(&s, &cfg);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("5.3.5 "), "{err}");
    assert!(err.contains(&format!("{}:2:1", cfg.display())), "{err}");
    assert!(err.contains("did you mean `destination`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn configured_destination_template() {
    let s = Scratch::new();
    let text = format!(
        "destination = \"mbox:{}/%n.mbox\"\n",
        s.dir.path().display()
    );
    let cfg = system_config(&s, "deliver.toml", text.as_bytes());
    let cmd = deliver_with(&s, &cfg);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let name = if is_root() {
        USER.to_string()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    if !name.is_empty() {
        assert!(s.path(&format!("{name}.mbox")).is_file());
    }
}

#[test]
fn usage_errors_exit_64() {
    let s = Scratch::new();
    let mut cmd = deliver(&s);
    cmd.arg("--no-such-flag");
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).starts_with("5.3.0 usage:"), "{}", stderr(&out));
    // OpenSMTPD's quoting pitfall: "-f -a addr" must not read "-a" as the sender.
    let mut cmd = deliver(&s);
    cmd.args(["-f", "-a", "joe@example.net"]);
    assert_eq!(code(&run(cmd, MESSAGE)), 64);
}

#[test]
fn unknown_user_exits_67() {
    if is_root() {
        let s = Scratch::new();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cursus-deliver"));
        cmd.env_clear()
            .arg("-c")
            .arg(system_config(&s, "c.toml", b""))
            .args(["-d", "no-such-user-xyz"]);
        let out = run(cmd, MESSAGE);
        assert_eq!(code(&out), 67, "{}", stderr(&out));
        assert!(stderr(&out).starts_with("5.1.1 "), "{}", stderr(&out));
    } else {
        let s = Scratch::new();
        let mut cmd = deliver(&s);
        cmd.args(["-d", "no-such-user-xyz"]);
        let out = run(cmd, MESSAGE);
        assert_eq!(code(&out), 67, "{}", stderr(&out));
    }
}

#[test]
fn root_is_never_the_delivering_user_by_default() {
    // Attack: a message delivered with root's privileges can be made to write anywhere.
    if !is_root() {
        eprintln!("SKIP root_is_never_the_delivering_user_by_default: needs root");
        return;
    }
    let s = Scratch::new();
    let c = system_config(&s, "c.toml", b"");
    let bin = env!("CARGO_BIN_EXE_cursus-deliver");
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .arg("-c")
        .arg(&c)
        .args(["-d", "root"])
        .arg("--maildir")
        .arg(s.path("M"));
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("5.7.0 "), "{}", stderr(&out));
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .arg("-c")
        .arg(&c)
        .arg("--maildir")
        .arg(s.path("M"));
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(!s.path("M").exists());
    // allow_root may not come from -o (an MTA-supplied argument).
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .arg("-c")
        .arg(&c)
        .args(["-d", "root", "-o", "allow_root=true"])
        .arg("--maildir")
        .arg(s.path("M"));
    assert_ne!(code(&run(cmd, MESSAGE)), 0);
    assert!(!s.path("M").exists());
}

#[test]
fn started_as_root_the_files_belong_to_the_user() {
    if !is_root() {
        eprintln!("SKIP started_as_root_the_files_belong_to_the_user: needs root");
        return;
    }
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut cmd = deliver(&s);
    cmd.arg("--maildir").arg(&md);
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (uid, gid) = delivery_ids();
    for p in [
        md.clone(),
        md.join("new"),
        files(&md.join("new"))[0].clone(),
    ] {
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", p.display());
    }
}

#[test]
fn killed_while_reading_leaves_nothing_visible() {
    use std::io::Write;
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mbox = s.file(
        "mbox",
        b"From x  Sun Nov 22 08:59:06 2026\nSubject: old\n\nold\n\n",
    );
    let before = std::fs::read(&mbox).expect("mbox");
    for target in ["--maildir", "--mbox"] {
        let mut cmd = deliver(&s);
        cmd.arg(target)
            .arg(if target == "--maildir" { &md } else { &mbox });
        cmd.stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"Subject: half\n\n").expect("write");
        for _ in 0..64 {
            stdin.write_all(&[b'y'; 16384]).expect("write");
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
    assert!(files(&md.join("new")).is_empty());
    assert!(files(&md.join("tmp")).is_empty());
    assert_eq!(std::fs::read(&mbox).expect("mbox"), before);
}

#[test]
fn large_message_is_stored_intact() {
    let s = Scratch::new();
    let md = s.path("Maildir");
    let mut input = b"Subject: big\r\n\r\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while input.len() < 20 << 20 {
        input.extend_from_slice(line);
    }
    let mut cmd = deliver(&s);
    cmd.args(["-f", "a@b", "-r", "u@h"])
        .arg("--maildir")
        .arg(&md);
    let out = run(cmd, &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stored = only_file(&md.join("new"));
    let want: Vec<u8> = input.iter().copied().filter(|&b| b != b'\r').collect();
    assert_eq!(
        &stored[b"Return-Path: <a@b>\nDelivered-To: u@h\n".len()..],
        &want[..]
    );
}

#[test]
fn configuration_someone_else_can_write_is_refused() {
    // Attack: whoever can write the configuration chooses where mail goes (and, in the
    // system file, could unlock delivery as root).
    let s = Scratch::new();
    let cfg = system_config(&s, "loose.toml", b"fsync = true\n");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = run(deliver_with(&s, &cfg), MESSAGE);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    if is_root() {
        // As root, a system file that belongs to an ordinary user is not trusted either.
        let cfg = system_config(&s, "theirs.toml", b"allow_root = true\n");
        let (uid, gid) = ensure_user(OTHER);
        std::os::unix::fs::chown(&cfg, Some(uid), Some(gid)).expect("chown");
        let out = run(deliver_with(&s, &cfg), MESSAGE);
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to trust it"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn user_configuration_chooses_the_destination() {
    if !is_root() {
        eprintln!("SKIP user_configuration_chooses_the_destination: needs the test user's home");
        return;
    }
    let (uid, gid) = delivery_ids();
    let home = nix::unistd::User::from_name(USER)
        .expect("lookup")
        .expect("user")
        .dir;
    let dir = home.join(".config/cursus");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for p in [home.join(".config"), dir.clone()] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
    }
    let s = Scratch::new();
    let target = s.path("from-user-config.mbox");
    let file = dir.join("deliver.toml");
    std::fs::write(
        &file,
        format!("destination = \"mbox:{}\"\n", target.display()),
    )
    .expect("write");
    std::os::unix::fs::chown(&file, Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run(deliver(&s), MESSAGE);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(target.is_file());
}
