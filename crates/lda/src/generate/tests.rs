//! Tests of `policy generate`: temporary aliases and passwd files whose homes hold .forward
//! files; the output must load and allow exactly what they ask for.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

/// The uid the test users have and their files are owned by: ours, or (when the tests run
/// as root, where uid 0 would need rules naming it) an ordinary uid the files are given to.
fn me() -> u32 {
    match nix::unistd::getuid().as_raw() {
        0 => 5000,
        uid => uid,
    }
}

fn give_to_me(path: &Path) {
    if nix::unistd::getuid().is_root() {
        std::os::unix::fs::chown(path, Some(me()), None).expect("chown");
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        World { _dir: dir, root }
    }

    fn home(&self, user: &str) -> String {
        let home = self.root.join(user);
        std::fs::create_dir_all(&home).expect("mkdir home");
        home.to_str().expect("utf-8 temp path").to_string()
    }

    fn forward(&self, user: &str, text: &str, mode: u32) {
        let path = Path::new(&self.home(user)).join(".forward");
        std::fs::write(&path, text).expect("write .forward");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        give_to_me(&path);
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn args(&self, aliases: &str, passwd: &str, min_uid: u32) -> GenerateArgs {
        GenerateArgs {
            aliases: self.file("aliases", aliases),
            passwd: self.file("passwd", passwd),
            min_uid,
            output: None,
            force: false,
        }
    }
}

const ALIASES: &str = "\
postmaster: root
archive: /var/spool/archive/all, root
proc: \"|/usr/bin/procmail -m /etc/procmailrc\"
vac: |/usr/bin/vacation
shelly: \"|exec /usr/bin/x\", \"|/usr/bin/y; rm -rf /\"
rel: |bin/relative
maildrop: /srv/drop/
list: :include:/etc/mail/list
";

fn allowed(policy: &Policy, user: &str, home: &str, destination: &str) -> bool {
    let destination: Destination = destination.parse().expect("destination");
    let uid = if user == DEFAULT_PRIVS { 65534 } else { me() };
    policy::check(
        policy,
        &Request {
            user,
            uid,
            home,
            destination: &destination,
        },
    )
    .is_allowed()
}

#[test]
fn the_generated_policy_loads_and_allows_exactly_what_was_asked() {
    let w = World::new();
    let (alice, bob) = (w.home("alice"), w.home("bob"));
    w.forward(
        "alice",
        "\\alice, \"|/usr/bin/procmail\"\n~/mbox-archive\n/var/mail/alice\n~/Maildir/.Lists/\n",
        0o644,
    );
    w.forward(
        "bob",
        "# bob's\n\"|/usr/local/bin/filter\"\n~/mbox-archive, /srv/shared/bob.mbox\n",
        0o600,
    );
    w.forward("carol", "|/usr/bin/evil\n", 0o664);
    w.forward("dave", "|/usr/bin/evil2\n", 0o644);
    let erin = w.home("erin");
    let elsewhere = w.file("elsewhere", "|/usr/bin/evil3\n");
    symlink(&elsewhere, Path::new(&erin).join(".forward")).expect("symlink");
    // dave's .forward belongs to the other test users' uid, never to his.
    let dave_uid = me() + 1;
    let passwd = format!(
        "alice:x:{me}:100::{alice}:/bin/sh\n\
         bob:x:{me}:100::{bob}:/bin/sh\n\
         carol:x:{me}:100::{carol}:/bin/sh\n\
         dave:x:{dave_uid}:100::{dave}:/bin/sh\n\
         erin:x:{me}:100::{erin}:/bin/sh\n\
         frank:x:{me}:100::{frank_home}:/bin/sh\n\
         broken line\n",
        me = me(),
        carol = w.home("carol"),
        dave = w.home("dave"),
        frank_home = w.root.join("frank-has-no-home").display(),
    );
    let args = w.args(ALIASES, &passwd, me());
    let text = generate(&args).expect("generate");
    let policy = policy::parse_system(&text, "generated").expect("the output loads");
    assert_eq!(policy.min_uid, me());

    let rules: Vec<(&str, &str)> = policy
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.kind.name()))
        .collect();
    assert_eq!(
        rules,
        [
            ("home-maildir", "maildir"),
            ("var-mail", "mbox"),
            ("command-procmail", "command"),
            ("command-vacation", "command"),
            ("command-filter", "command"),
            ("file-all", "mbox"),
            ("file-drop", "maildir"),
            ("file-mbox-archive", "mbox"),
            ("file-bob-mbox", "mbox"),
        ]
    );

    let nobody = "/nonexistent";
    let table: &[(&str, &str, &str, bool)] = &[
        // the defaults
        (
            "alice",
            &alice,
            &format!("maildir:{alice}/Maildir/.Lists"),
            true,
        ),
        ("alice", &alice, "mbox:/var/mail/alice", true),
        // commands: arguments only where some use passed them
        (
            "alice",
            &alice,
            "command:/usr/bin/procmail -m /etc/procmailrc",
            true,
        ),
        ("alice", &alice, "command:/usr/bin/procmail", true),
        ("alice", &alice, "command:/usr/bin/vacation", true),
        ("alice", &alice, "command:/usr/bin/vacation joe", false),
        ("bob", &bob, "command:/usr/local/bin/filter", true),
        // shell syntax, relative programs, unsafe .forward files: no rule
        ("alice", &alice, "command:/usr/bin/x", false),
        ("alice", &alice, "command:/usr/bin/y", false),
        ("alice", &alice, "command:/bin/relative", false),
        ("carol", &alice, "command:/usr/bin/evil", false),
        ("dave", &alice, "command:/usr/bin/evil2", false),
        ("erin", &erin, "command:/usr/bin/evil3", false),
        // alias files: as nobody only
        (DEFAULT_PRIVS, nobody, "mbox:/var/spool/archive/all", true),
        ("alice", &alice, "mbox:/var/spool/archive/all", false),
        (DEFAULT_PRIVS, nobody, "maildir:/srv/drop", true),
        (DEFAULT_PRIVS, nobody, "mbox:/srv/drop", false),
        // .forward files: as their owner only
        ("alice", &alice, &format!("mbox:{alice}/mbox-archive"), true),
        ("bob", &bob, &format!("mbox:{bob}/mbox-archive"), true),
        (
            "carol",
            &alice,
            &format!("mbox:{alice}/mbox-archive"),
            false,
        ),
        ("bob", &bob, "mbox:/srv/shared/bob.mbox", true),
        ("alice", &alice, "mbox:/srv/shared/bob.mbox", false),
    ];
    for (user, home, destination, want) in table {
        assert_eq!(
            allowed(&policy, user, home, destination),
            *want,
            "{user} {destination}\n{text}"
        );
    }

    for fragment in [
        "# from alias \"proc\" (aliases line 3)",
        "# from alice's ~/.forward line 1",
        "# from bob's ~/.forward line 3",
        "default_privs (nobody)",
        "command \"exec /usr/bin/x\" from alias \"shelly\" (aliases line 5): not listed, \"exec\" is not an absolute",
        "command \"/usr/bin/y; rm -rf /\" from alias \"shelly\" (aliases line 5): not listed, it uses shell syntax",
        "command \"bin/relative\" from alias \"rel\"",
        ":include:/etc/mail/list from alias \"list\" (aliases line 8): not read",
        "from alice's ~/.forward line 3: already allowed by rule `var-mail`",
        "from alice's ~/.forward line 4: already allowed by rule `home-maildir`",
        "user carol: ~/.forward skipped: it is group- or world-writable (mode 0664)",
        &format!(
            "user dave: ~/.forward skipped: it is owned by uid {}, not {dave_uid}",
            me()
        ),
        "user erin: ~/.forward skipped: it is a symbolic link",
        "line 7 skipped: not seven `:`-separated fields",
    ] {
        assert!(text.contains(fragment), "missing {fragment:?} in\n{text}");
    }
}

#[test]
fn users_below_min_uid_are_skipped_with_a_comment() {
    let w = World::new();
    w.forward("sys", "|/usr/bin/sysprog\n", 0o644);
    let passwd = format!("sys:x:{}:1::{}:/bin/sh\n", me(), w.home("sys"));
    let args = w.args("", &passwd, me() + 1);
    let text = generate(&args).expect("generate");
    let policy = policy::parse_system(&text, "generated").expect("loads");
    assert_eq!(policy.rules.len(), 2, "{text}");
    assert!(
        text.contains(&format!(
            "# user \"sys\" (uid {}) skipped: below min_uid {}",
            me(),
            me() + 1
        )),
        "{text}"
    );
}

#[test]
fn a_missing_aliases_file_is_a_comment_and_a_bad_one_an_error() {
    let w = World::new();
    let mut args = w.args("", "", 1000);
    args.aliases = w.root.join("no-such-aliases");
    let text = generate(&args).expect("generate");
    assert!(
        text.contains("no-such-aliases: no such file; no alias rules"),
        "{text}"
    );

    let args = w.args("a: b\nbad line\nA: c\n", "", 1000);
    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(run(&args, &mut out, &mut err), 1);
    let err = String::from_utf8(err).expect("utf-8");
    assert!(
        err.contains("aliases: line 2: no `:` after the alias name"),
        "{err}"
    );
    assert!(
        err.contains("aliases: line 3: alias \"a\" is already defined at line 1"),
        "{err}"
    );
    assert!(out.is_empty());
}

#[test]
fn output_is_never_overwritten_without_force() {
    let w = World::new();
    let mut args = w.args("", "", 1000);
    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(run(&args, &mut out, &mut err), 0);
    let stdout = String::from_utf8(out).expect("utf-8");
    assert!(stdout.contains("name = \"home-maildir\""));

    let target = w.file("policy.toml", "keep me\n");
    args.output = Some(target.clone());
    let mut err = Vec::new();
    assert_eq!(run(&args, &mut Vec::new(), &mut err), 1);
    assert!(String::from_utf8_lossy(&err).contains("give --force"));
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me\n");

    args.force = true;
    assert_eq!(run(&args, &mut Vec::new(), &mut Vec::new()), 0);
    assert_eq!(std::fs::read_to_string(&target).expect("read"), stdout);

    args.force = false;
    args.output = Some(w.root.join("new.toml"));
    assert_eq!(run(&args, &mut Vec::new(), &mut Vec::new()), 0);
}

#[test]
fn passwd_lines_parse_or_say_why_not() {
    let text = "root:x:0:0:root:/root:/bin/bash\n# comment\n\njoe:x:1000:1000:Joe,,,:/home/joe:/bin/sh\r\nbad\nx:x:nan:0::/:/bin/sh\n";
    let got = parse_passwd(text);
    let entry = |name: &str, uid, home: &str| {
        Ok(PasswdEntry {
            name: name.into(),
            uid,
            home: home.into(),
        })
    };
    assert_eq!(
        got,
        vec![
            entry("root", 0, "/root"),
            entry("joe", 1000, "/home/joe"),
            Err((5, "not seven `:`-separated fields".into())),
            Err((6, "uid \"nan\" is not a number".into())),
        ]
    );
}
