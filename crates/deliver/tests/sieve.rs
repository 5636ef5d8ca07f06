//! cursus-deliver with Sieve, end to end: the real binary started as root with `-d` (or as
//! the current user), real scripts, a real maildir, and a fake sendmail written by the test
//! that records its argv and standard input. Refusal tests name the attack they stop.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::RwLock;

use support::*;

/// Tests that change the test user's home (its ~/.dovecot.sieve or its own configuration
/// file) take this for writing; every other test takes it for reading, since every
/// delivery reads that configuration file.
static HOME: RwLock<()> = RwLock::new(());

fn home_read() -> std::sync::RwLockReadGuard<'static, ()> {
    HOME.read().unwrap_or_else(|e| e.into_inner())
}

fn home_write() -> std::sync::RwLockWriteGuard<'static, ()> {
    HOME.write().unwrap_or_else(|e| e.into_inner())
}

const RCPT: &str = "joe@example.net";
const SENDER: &str = "alice@example.org";

/// Something unique to this test run, for addresses and Message-IDs the response
/// memory in the (shared) test user's home must not have seen before.
fn unique(tag: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{tag}-{}-{}", std::process::id(), now.as_nanos())
}

/// A sendmail stand-in: records argv (one per line) and stdin as outbox/N.argv and
/// outbox/N.msg, then exits with the number in sendmail-exit (0 when absent).
fn fake_sendmail(s: &Scratch) -> PathBuf {
    s.mkdir("outbox");
    let root = s.dir.path().display().to_string();
    let script = format!(
        "#!/bin/sh\n\
         i=0\n\
         while [ -e {root}/outbox/$i.argv ]; do i=$((i+1)); done\n\
         cat > {root}/outbox/$i.msg\n\
         for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {root}/outbox/$i.argv\n\
         if [ -e {root}/sendmail-exit ]; then exit $(cat {root}/sendmail-exit); fi\n\
         exit 0\n"
    );
    // Through install(1): a writable descriptor of this threaded process could leak into
    // another test's fork and make the exec fail with ETXTBSY.
    let text = s.file("fake-sendmail.txt", script.as_bytes());
    let p = s.path("fake-sendmail");
    let ok = std::process::Command::new("install")
        .arg("-m755")
        .arg(&text)
        .arg(&p)
        .status();
    assert!(ok.expect("install").success());
    std::fs::remove_file(text).expect("rm");
    p
}

/// What the fake sendmail received, in order.
fn outbox(s: &Scratch) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for i in 0.. {
        let argv = s.path(&format!("outbox/{i}.argv"));
        let Ok(text) = std::fs::read_to_string(&argv) else {
            break;
        };
        let msg = std::fs::read(s.path(&format!("outbox/{i}.msg"))).unwrap_or_default();
        out.push((
            text.lines().map(str::to_string).collect(),
            String::from_utf8_lossy(&msg).into_owned(),
        ));
    }
    out
}

/// A delivery from SENDER into Scratch/Maildir with `script` as the user's script and the
/// fake sendmail.
fn with_script(s: &Scratch, script: &str) -> Command {
    with_script_from(s, script, SENDER)
}

/// The same from `sender` ("" for the null sender).
fn with_script_from(s: &Scratch, script: &str, sender: &str) -> Command {
    let path = s.file("user.sieve", script.as_bytes());
    let sendmail = fake_sendmail(s);
    let mut cmd = deliver(s);
    cmd.arg("-o")
        .arg(format!("sieve={}", path.display()))
        .arg("-o")
        .arg(format!("sendmail={}", sendmail.display()))
        .args(["-f", sender, "-r", RCPT, "-v"])
        .arg("--maildir")
        .arg(s.path("Maildir"));
    cmd
}

fn ok(out: &Output) -> String {
    assert_eq!(
        code(out),
        0,
        "stderr: {} stdout: {}",
        stderr(out),
        stdout(out)
    );
    stdout(out)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every message file under a maildir (root and folders), relative paths, sorted.
fn stored(md: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![md.to_path_buf()];
    dirs.extend(files(md).into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    }));
    for d in dirs {
        for sub in ["new", "cur"] {
            for f in files(&d.join(sub)) {
                out.push(
                    f.strip_prefix(md)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    out.sort();
    out
}

fn test_home() -> Option<PathBuf> {
    if !is_root() {
        return None;
    }
    delivery_ids();
    nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .map(|u| u.dir)
}

#[test]
fn fileinto_with_flags_lands_in_the_folder_cur_with_maildir_flags() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require [\"fileinto\", \"imap4flags\"];\n\
         fileinto :flags [\"\\\\Seen\", \"\\\\Flagged\", \"$Label1\"] \"Lists.rust\";\n",
    );
    let out = run(cmd, MESSAGE);
    let said = ok(&out);
    let md = s.path("Maildir");
    let got = stored(&md);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with(".Lists.rust/cur/"), "{got:?}");
    assert!(got[0].ends_with(":2,FS"), "{got:?}");
    assert!(md.join(".Lists.rust/maildirfolder").is_file());
    assert!(
        said.contains("$Label1"),
        "keyword dropped with a note: {said}"
    );
    let text = std::fs::read(md.join(&got[0])).expect("read");
    assert!(text.starts_with(b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n"));
}

#[test]
fn fileinto_create_makes_the_folder_and_without_it_mail_goes_to_inbox() {
    let _h = home_read();
    let s = Scratch::new();
    let mut cmd = with_script(
        &s,
        "require [\"fileinto\", \"mailbox\"];\nfileinto :create \"Archive.2026\";\n",
    );
    cmd.args(["-o", "folder_autocreate=false"]);
    ok(&run(cmd, MESSAGE));
    let md = s.path("Maildir");
    let got = stored(&md);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with(".Archive.2026/new/"), "{got:?}");

    let s = Scratch::new();
    let mut cmd = with_script(&s, "require \"fileinto\";\nfileinto \"Missing\";\n");
    cmd.args(["-o", "folder_autocreate=false"]);
    let said = ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("new/"), "{got:?}");
    assert!(said.contains("does not exist"), "{said}");
    assert!(!s.path("Maildir/.Missing").exists());
}

#[test]
fn hostile_fileinto_names_go_to_inbox_and_create_nothing_outside() {
    // Attack: a script (or a variable filled from a header, `fileinto "${1}"`) names a
    // folder that would be a path out of the maildir.
    let _h = home_read();
    for name in [
        "../escape",
        "a/b",
        ".hidden",
        "a..b",
        "..",
        "x\ny",
        "Lists/../../up",
    ] {
        let s = Scratch::new();
        let cmd = with_script(
            &s,
            &format!("require \"fileinto\";\nfileinto \"{name}\";\n"),
        );
        let said = ok(&run(cmd, MESSAGE));
        let md = s.path("Maildir");
        let got = stored(&md);
        assert_eq!(got.len(), 1, "{name:?}: {got:?}");
        assert!(got[0].starts_with("new/"), "{name:?}: {got:?}");
        let top: Vec<String> = files(s.dir.path())
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            // The response memory (non-root runs keep HOME here), and the log of a name
            // the interpreter already refuses when it compiles the script.
            .filter(|n| n != ".local" && n != "user.sieve.log")
            .collect();
        assert_eq!(
            top,
            vec![
                "Maildir",
                "fake-sendmail",
                "outbox",
                "system.toml",
                "user.sieve"
            ],
            "{name:?}"
        );
        let dirs: Vec<String> = files(&md)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(dirs, vec!["cur", "new", "tmp"], "{name:?}");
        assert!(
            said.contains("INBOX") || said.contains("message kept"),
            "{name:?}: {said}"
        );
    }
}

#[test]
fn keep_and_fileinto_store_one_copy_per_folder() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"fileinto\";\nkeep;\nfileinto \"INBOX\";\nfileinto \"Copy\";\nfileinto \"Copy\";\n",
    );
    ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(".Copy/new/") && got[1].starts_with("new/"),
        "{got:?}"
    );
}

#[test]
fn discard_stores_nothing_and_exits_0() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(&s, "discard;\n");
    let said = ok(&run(cmd, MESSAGE));
    assert!(said.contains("discarded"), "{said}");
    assert!(stored(&s.path("Maildir")).is_empty());
    assert!(outbox(&s).is_empty());
}

#[test]
fn reject_exits_77_with_the_reason_by_default() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"reject\";\nreject \"I do not want this.\nReally.\";\n",
    );
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert_eq!(stderr(&out), "5.7.1 I do not want this. Really.\n");
    assert!(stored(&s.path("Maildir")).is_empty());
    assert!(outbox(&s).is_empty());
}

#[test]
fn ereject_is_reject_in_an_mda() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(&s, "require \"ereject\";\nereject \"no\";\n");
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("5.7.1 no"), "{}", stderr(&out));
}

#[test]
fn reject_mdn_mode_mails_a_report_to_the_sender_and_never_to_the_null_sender() {
    let _h = home_read();
    let s = Scratch::new();
    let mut cmd = with_script(&s, "require \"reject\";\nreject \"Not here.\";\n");
    cmd.args(["-o", "sieve_reject=mdn"]);
    let said = ok(&run(cmd, MESSAGE));
    assert!(said.contains("rejected"), "{said}");
    assert!(stored(&s.path("Maildir")).is_empty());
    let sent = outbox(&s);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, vec!["-i", "-f", "<>", "--", SENDER]);
    let msg = &sent[0].1;
    for want in [
        "To: <alice@example.org>\n",
        "Subject: Rejected: hello\n",
        "report-type=disposition-notification",
        "Not here.",
        "Disposition: automatic-action/MDN-sent-automatically; deleted\n",
        "Final-Recipient: rfc822; joe@example.net\n",
        "Original-Message-ID: <1@example.org>\n",
        "Auto-Submitted: auto-replied",
    ] {
        assert!(msg.contains(want), "missing {want:?}:\n{msg}");
    }

    // A bounce is never answered: nothing is sent, the message is still refused.
    let s = Scratch::new();
    let mut cmd = with_script_from(&s, "require \"reject\";\nreject \"Not here.\";\n", "");
    cmd.args(["-o", "sieve_reject=mdn"]);
    ok(&run(cmd, MESSAGE));
    assert!(outbox(&s).is_empty());
    assert!(stored(&s.path("Maildir")).is_empty());
}

#[test]
fn redirect_keeps_the_envelope_sender_and_our_delivered_to() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(&s, "redirect \"bob@example.com\";\n");
    let said = ok(&run(cmd, MESSAGE));
    assert!(said.contains("redirected to bob@example.com"), "{said}");
    assert!(
        stored(&s.path("Maildir")).is_empty(),
        "redirect cancels the keep"
    );
    let sent = outbox(&s);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, vec!["-i", "-f", SENDER, "--", "bob@example.com"]);
    let mut want = b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n".to_vec();
    want.extend(message_lf());
    assert_eq!(sent[0].1.as_bytes(), &want[..]);

    // The null sender stays null.
    let s = Scratch::new();
    let cmd = with_script_from(&s, "redirect \"bob@example.com\";\n", "<>");
    ok(&run(cmd, MESSAGE));
    assert_eq!(
        outbox(&s)[0].0,
        vec!["-i", "-f", "<>", "--", "bob@example.com"]
    );
}

#[test]
fn a_redirected_message_that_comes_back_is_a_loop() {
    // What we redirect carries our Delivered-To; delivered to us again it is refused.
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(&s, "redirect \"joe@example.net\";\n");
    ok(&run(cmd, MESSAGE));
    // On its way back the MTA puts its Received on top (Postfix pickup does).
    let looped = format!(
        "Received: by mx.example.net (Postfix, from userid 1001)\n{}",
        outbox(&s)[0].1
    );
    let s2 = Scratch::new();
    let cmd = with_script(&s2, "redirect \"joe@example.net\";\n");
    let out = run(cmd, looped.as_bytes());
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("5.4.6 "), "{}", stderr(&out));
    assert!(outbox(&s2).is_empty());
}

#[test]
fn sendmail_failure_defers_only_when_nothing_was_stored() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(&s, "redirect \"bob@example.com\";\n");
    s.file("sendmail-exit", b"75\n");
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("4.3.0 redirect to bob@example.com failed"),
        "{}",
        stderr(&out)
    );
    assert!(stored(&s.path("Maildir")).is_empty());

    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"copy\";\nredirect :copy \"bob@example.com\";\n",
    );
    s.file("sendmail-exit", b"1\n");
    let said = ok(&run(cmd, MESSAGE));
    assert!(
        said.contains("redirect to bob@example.com failed"),
        "{said}"
    );
    assert_eq!(stored(&s.path("Maildir")).len(), 1);
}

fn vacation_script() -> &'static str {
    "require \"vacation\";\nvacation :days 7 :subject \"Away\" \"I am away until Monday.\";\n"
}

#[test]
fn vacation_is_sent_once_then_remembered() {
    let _h = home_read();
    let s = Scratch::new();
    let sender = format!("{}@example.org", unique("vac"));
    for _ in 0..2 {
        let cmd = with_script_from(&s, vacation_script(), &sender);
        ok(&run(cmd, MESSAGE));
    }
    let sent = outbox(&s);
    assert_eq!(sent.len(), 1, "second response suppressed: {sent:?}");
    assert_eq!(sent[0].0, vec!["-i", "-f", "<>", "--", sender.as_str()]);
    let msg = &sent[0].1;
    for want in [
        "From: <joe@example.net>\n",
        "Subject: Away\n",
        "In-Reply-To: <1@example.org>\n",
        "References: <1@example.org>\n",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0\n",
        "Content-Type: text/plain; charset=utf-8\n",
        "\n\nI am away until Monday.\n",
    ] {
        assert!(msg.contains(want), "missing {want:?}:\n{msg}");
    }
    assert!(
        msg.contains("\nDate: ") && msg.contains("\nMessage-ID: <"),
        "{msg}"
    );
    assert_eq!(
        stored(&s.path("Maildir")).len(),
        2,
        "vacation keeps the message"
    );
    let db = match test_home() {
        Some(home) => home.join(".local/share/cursus/sieve.sqlite"),
        None => s.path(".local/share/cursus/sieve.sqlite"),
    };
    let meta = std::fs::metadata(&db).expect("response memory in the home");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), delivery_ids().0);
}

#[test]
fn vacation_never_answers_the_null_sender_or_a_list() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script_from(&s, vacation_script(), "");
    ok(&run(cmd, MESSAGE));
    let mut list = b"List-Id: <rust.lists.example.org>\n".to_vec();
    list.extend_from_slice(MESSAGE);
    let sender = format!("{}@example.org", unique("list"));
    let cmd = with_script_from(&s, vacation_script(), &sender);
    ok(&run(cmd, &list));
    let mut auto = b"Auto-Submitted: auto-replied\n".to_vec();
    auto.extend_from_slice(MESSAGE);
    let sender = format!("{}@example.org", unique("auto"));
    let cmd = with_script_from(&s, vacation_script(), &sender);
    ok(&run(cmd, &auto));
    assert!(outbox(&s).is_empty(), "{:?}", outbox(&s));
    assert_eq!(stored(&s.path("Maildir")).len(), 3);
}

#[test]
fn notify_mailto_goes_to_sendmail_from_the_null_sender() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"enotify\";\nnotify :message \"Mail from Alice\" \"mailto:me@example.com\";\n",
    );
    ok(&run(cmd, MESSAGE));
    let sent = outbox(&s);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, vec!["-i", "-f", "<>", "--", "me@example.com"]);
    assert!(
        sent[0].1.contains("Subject: Mail from Alice\n"),
        "{}",
        sent[0].1
    );
    assert!(
        sent[0].1.contains("Auto-Submitted: auto-notified\n"),
        "{}",
        sent[0].1
    );
    assert_eq!(
        stored(&s.path("Maildir")).len(),
        1,
        "notify keeps the message"
    );
}

#[test]
fn duplicate_is_remembered_across_deliveries() {
    let _h = home_read();
    let s = Scratch::new();
    let id = format!("<{}@example.org>", unique("dup"));
    let message = format!("Message-ID: {id}\nFrom: a@example.org\nSubject: d\n\nbody\n");
    for _ in 0..2 {
        let cmd = with_script(
            &s,
            "require \"duplicate\";\nif duplicate { discard; stop; }\n",
        );
        ok(&run(cmd, message.as_bytes()));
    }
    assert_eq!(stored(&s.path("Maildir")).len(), 1, "second copy discarded");
}

#[test]
fn a_broken_script_keeps_the_message_and_logs_line_and_column() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"fileinto\";\nif header :contains \"subject\" \"x\" {\n  fileinot \"Spam\";\n}\n",
    );
    let said = ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("new/"), "{got:?}");
    let log_path = s.path("user.sieve.log");
    let log = std::fs::read_to_string(&log_path).expect("log next to the script");
    assert!(log.contains("user.sieve:3:3"), "{log}");
    assert!(log.contains("<1@example.org>"), "{log}");
    assert!(said.contains("sieve error"), "{said}");
    let meta = std::fs::metadata(&log_path).expect("stat");
    assert_eq!(meta.uid(), delivery_ids().0);
    assert_eq!(meta.mode() & 0o077, 0);

    // A runtime error (here: too many redirects) also keeps the message.
    let s = Scratch::new();
    let script: String = (0..10)
        .map(|i| format!("redirect \"r{i}@example.com\";\n"))
        .collect();
    let cmd = with_script(&s, &script);
    ok(&run(cmd, MESSAGE));
    assert_eq!(stored(&s.path("Maildir")).len(), 1);
    assert!(outbox(&s).is_empty());
    assert!(s.path("user.sieve.log").is_file());
}

#[test]
fn editheader_cannot_remove_our_trace_fields() {
    let _h = home_read();
    let s = Scratch::new();
    let cmd = with_script(
        &s,
        "require \"editheader\";\naddheader \"X-Sieve\" \"seen\";\ndeleteheader \"Delivered-To\";\n",
    );
    ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert_eq!(got.len(), 1, "{got:?}");
    let text = std::fs::read_to_string(s.path("Maildir").join(&got[0])).expect("read");
    assert!(
        text.starts_with("Return-Path: <alice@example.org>\nDelivered-To: joe@example.net\n"),
        "{text}"
    );
    assert!(text.contains("X-Sieve: seen\n"), "{text}");
    assert_eq!(text.matches("Delivered-To:").count(), 1, "{text}");
    assert!(text.ends_with("\u{20ac} 8-bit text\n"), "{text}");
}

#[test]
fn administrator_scripts_run_before_and_after_in_order() {
    let _h = home_read();
    let s = Scratch::new();
    let before = system_config(
        &s,
        "before.sieve",
        b"require \"copy\";\nredirect :copy \"before@example.com\";\n",
    );
    let after = system_config(
        &s,
        "after.sieve",
        b"require \"copy\";\nredirect :copy \"after@example.com\";\n",
    );
    let cfg = system_config(
        &s,
        "deliver.toml",
        format!(
            "sieve_before = [\"{}\"]\nsieve_after = [\"{}\"]\n",
            before.display(),
            after.display()
        )
        .as_bytes(),
    );
    let user = s.file(
        "user.sieve",
        b"require \"copy\";\nredirect :copy \"user@example.com\";\n",
    );
    let sendmail = fake_sendmail(&s);
    let mut cmd = deliver_with(&s, &cfg);
    cmd.arg("-o")
        .arg(format!("sieve={}", user.display()))
        .arg("-o")
        .arg(format!("sendmail={}", sendmail.display()))
        .args(["-f", SENDER, "-r", RCPT])
        .arg("--maildir")
        .arg(s.path("Maildir"));
    ok(&run(cmd, MESSAGE));
    let order: Vec<String> = outbox(&s)
        .into_iter()
        .map(|(argv, _)| argv[4].clone())
        .collect();
    assert_eq!(
        order,
        vec![
            "before@example.com",
            "user@example.com",
            "after@example.com"
        ]
    );
    assert_eq!(stored(&s.path("Maildir")).len(), 1);

    // A before script that files the message ends the sequence: the user's never runs.
    let s = Scratch::new();
    let before = system_config(
        &s,
        "before.sieve",
        b"require \"fileinto\";\nfileinto \"Spam\";\n",
    );
    let cfg = system_config(
        &s,
        "deliver.toml",
        format!("sieve_before = [\"{}\"]\n", before.display()).as_bytes(),
    );
    let user = s.file("user.sieve", b"redirect \"user@example.com\";\n");
    let sendmail = fake_sendmail(&s);
    let mut cmd = deliver_with(&s, &cfg);
    cmd.arg("-o")
        .arg(format!("sieve={}", user.display()))
        .arg("-o")
        .arg(format!("sendmail={}", sendmail.display()))
        .arg("--maildir")
        .arg(s.path("Maildir"));
    ok(&run(cmd, MESSAGE));
    assert!(outbox(&s).is_empty());
    let got = stored(&s.path("Maildir"));
    assert!(
        got.len() == 1 && got[0].starts_with(".Spam/new/"),
        "{got:?}"
    );
}

#[test]
fn administrator_script_others_can_write_is_not_run() {
    // Attack: whoever can write an administrator script can redirect everyone's mail.
    let _h = home_read();
    let s = Scratch::new();
    let before = system_config(&s, "before.sieve", b"redirect \"thief@example.com\";\n");
    std::fs::set_permissions(&before, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let cfg = system_config(
        &s,
        "deliver.toml",
        format!("sieve_before = [\"{}\"]\n", before.display()).as_bytes(),
    );
    let sendmail = fake_sendmail(&s);
    let mut cmd = deliver_with(&s, &cfg);
    cmd.args(["-o", "sieve="])
        .arg("-o")
        .arg(format!("sendmail={}", sendmail.display()))
        .arg("-v")
        .arg("--maildir")
        .arg(s.path("Maildir"));
    let said = ok(&run(cmd, MESSAGE));
    assert!(said.contains("sieve error, message kept"), "{said}");
    assert!(outbox(&s).is_empty());
    assert_eq!(stored(&s.path("Maildir")).len(), 1);
}

#[test]
fn only_the_system_file_names_administrator_scripts() {
    // Attack: an MTA-supplied -o (or a user's file) naming a script that runs for everyone.
    let _h = home_read();
    let s = Scratch::new();
    let evil = s.file("evil.sieve", b"redirect \"thief@example.com\";\n");
    let mut cmd = deliver(&s);
    cmd.arg("-o")
        .arg(format!("sieve_before=[\"{}\"]", evil.display()))
        .arg("--maildir")
        .arg(s.path("Maildir"));
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("sieve_before may only be set in the system configuration file"));
    assert!(stored(&s.path("Maildir")).is_empty());
}

/// Restores a file in the test user's home when dropped (also on panic).
struct Restore(PathBuf);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn chown_user(p: &Path) {
    let (uid, gid) = delivery_ids();
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

#[test]
fn user_file_cannot_name_administrator_scripts() {
    let Some(home) = test_home() else {
        eprintln!("SKIP user_file_cannot_name_administrator_scripts: needs the test user's home");
        return;
    };
    let _h = home_write();
    let dir = home.join(".config/cursus");
    std::fs::create_dir_all(&dir).expect("mkdir");
    chown_user(&home.join(".config"));
    chown_user(&dir);
    let file = dir.join("deliver.toml");
    let _restore = Restore(file.clone());
    std::fs::write(&file, b"sieve_before = [\"/tmp/x.sieve\"]\n").expect("write");
    chown_user(&file);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let s = Scratch::new();
    let mut cmd = deliver(&s);
    cmd.arg("--maildir").arg(s.path("Maildir"));
    let out = run(cmd, MESSAGE);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("sieve_before may only be set in the system configuration file"));
}

#[test]
fn dovecot_sieve_link_and_personal_include_are_found() {
    let Some(home) = test_home() else {
        eprintln!(
            "SKIP dovecot_sieve_link_and_personal_include_are_found: needs the test user's home"
        );
        return;
    };
    let _h = home_write();
    let sieve_dir = home.join("sieve");
    std::fs::create_dir_all(&sieve_dir).expect("mkdir");
    chown_user(&sieve_dir);
    let main = sieve_dir.join("cursus-test-main.sieve");
    let sub = sieve_dir.join("cursus-test-sub.sieve");
    let link = home.join(".dovecot.sieve");
    let _r1 = Restore(link.clone());
    let _r2 = Restore(main.clone());
    let _r3 = Restore(sub.clone());
    let _r4 = Restore(home.join(".dovecot.sieve.log"));
    let _ = std::fs::remove_file(&link);
    std::fs::write(
        &main,
        b"require \"include\";\ninclude :personal \"cursus-test-sub\";\n",
    )
    .expect("write");
    std::fs::write(&sub, b"require \"fileinto\";\nfileinto \"Found\";\n").expect("write");
    chown_user(&main);
    chown_user(&sub);
    std::os::unix::fs::symlink("sieve/cursus-test-main.sieve", &link).expect("symlink");
    let s = Scratch::new();
    let mut cmd = deliver(&s);
    cmd.arg("-v").arg("--maildir").arg(s.path("Maildir"));
    let out = run(cmd, MESSAGE);
    let said = ok(&out);
    let got = stored(&s.path("Maildir"));
    assert!(
        got.len() == 1 && got[0].starts_with(".Found/new/"),
        "{got:?} {said}"
    );

    // sieve = "" turns the user's script off.
    let s = Scratch::new();
    let mut cmd = deliver(&s);
    cmd.args(["-o", "sieve="])
        .arg("--maildir")
        .arg(s.path("Maildir"));
    ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert!(got.len() == 1 && got[0].starts_with("new/"), "{got:?}");
}

#[test]
fn mbox_destination_files_into_the_mailbox_itself() {
    let _h = home_read();
    let s = Scratch::new();
    let path = s.file(
        "user.sieve",
        b"require \"fileinto\";\nfileinto \"Lists\";\nkeep;\n",
    );
    let mut cmd = deliver(&s);
    cmd.arg("-o")
        .arg(format!("sieve={}", path.display()))
        .args(["-f", SENDER, "-v"])
        .arg("--mbox")
        .arg(s.path("mbox"));
    let said = ok(&run(cmd, MESSAGE));
    assert!(said.contains("has no folders"), "{said}");
    let text = std::fs::read_to_string(s.path("mbox")).expect("mbox");
    assert_eq!(
        text.matches("\nSubject: hello\n").count(),
        1,
        "one copy: {text}"
    );
}

#[test]
fn keep_goes_to_the_default_mailbox_of_dash_m() {
    let _h = home_read();
    let s = Scratch::new();
    let mut cmd = with_script(&s, "require \"fileinto\";\nkeep;\nfileinto \"Other\";\n");
    cmd.args(["-m", "Lists"]);
    ok(&run(cmd, MESSAGE));
    let got = stored(&s.path("Maildir"));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(".Lists/new/") && got[1].starts_with(".Other/new/"),
        "{got:?}"
    );
}

#[test]
fn a_large_message_is_evaluated_from_a_bounded_copy_and_stored_whole() {
    let _h = home_read();
    let s = Scratch::new();
    let mut input = b"Subject: big\n\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    while input.len() < 11 << 20 {
        input.extend_from_slice(line);
    }
    input.extend_from_slice(b"MARKER-AT-THE-END\n");
    let cmd = with_script(
        &s,
        "require [\"body\", \"fileinto\"];\nif body :raw :contains \"MARKER-AT-THE-END\" { fileinto \"Seen\"; }\n",
    );
    let said = ok(&run(cmd, &input));
    assert!(said.contains("first 10 MiB"), "{said}");
    let got = stored(&s.path("Maildir"));
    assert!(
        got.len() == 1 && got[0].starts_with("new/"),
        "the cut body has no marker: {got:?}"
    );
    let text = std::fs::read(s.path("Maildir").join(&got[0])).expect("read");
    assert!(text.ends_with(b"MARKER-AT-THE-END\n"), "stored whole");
}
