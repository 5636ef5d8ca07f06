//! Test support: run the real cursus-deliver binary as an ordinary user, even when the test
//! suite runs as root (CI does), so that permission checks mean something.
//!
//! As root, a test user `cursus-t1` (and `cursus-t2` for foreign-owner cases) is created with
//! useradd, and the binary is started as root with `-d cursus-t1`: that also exercises the
//! credential drop on every test. As an ordinary user, the binary runs as that user.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const USER: &str = "cursus-t1";
pub const OTHER: &str = "cursus-t2";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn ensure_user(name: &str) -> (u32, u32) {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let status = Command::new("useradd")
            .args(["-m", "-s", "/usr/sbin/nologin", name])
            .status()
            .expect("useradd runs");
        assert!(status.success() || nix::unistd::User::from_name(name).ok().flatten().is_some());
    }
    let u = nix::unistd::User::from_name(name)
        .expect("lookup")
        .expect("user exists");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The uid/gid deliveries run as in this test run.
pub fn delivery_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        if is_root() {
            ensure_user(USER)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        }
    })
}

/// A private directory owned by the delivering user, removed at drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("cursus-deliver-test")
            .tempdir()
            .expect("tempdir");
        let (uid, gid) = delivery_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown scratch");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates a file owned by the delivering user.
    pub fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
            chown_tree(parent, self.dir.path());
        }
        std::fs::write(&p, content).expect("write");
        let (uid, gid) = delivery_ids();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
        p
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        chown_tree(&p, self.dir.path());
        p
    }
}

fn chown_tree(leaf: &Path, top: &Path) {
    let (uid, gid) = delivery_ids();
    let mut p = leaf.to_path_buf();
    while p.starts_with(top) && p != top {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown dir");
        if !p.pop() {
            break;
        }
    }
}

/// A command for the binary with a clean environment and no system configuration.
pub fn deliver(scratch: &Scratch) -> Command {
    let empty_config = scratch.path("system.toml");
    if !empty_config.exists() {
        std::fs::write(&empty_config, b"").expect("write config");
    }
    deliver_with(scratch, &empty_config)
}

/// Writes a system configuration file owned by the test runner (root in CI, as an
/// administrator's file would be).
pub fn system_config(scratch: &Scratch, name: &str, content: &[u8]) -> PathBuf {
    let p = scratch.path(name);
    std::fs::write(&p, content).expect("write config");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p
}

/// A command for the binary with the given system configuration file.
pub fn deliver_with(scratch: &Scratch, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cursus-deliver"));
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    cmd.arg("-c").arg(config);
    if is_root() {
        cmd.args(["-d", USER]);
    } else {
        cmd.env("HOME", scratch.dir.path());
    }
    cmd.env("TMPDIR", scratch.dir.path());
    cmd
}

/// Runs the command with `stdin` as the message.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cursus-deliver");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files in a directory, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub const MESSAGE: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: joe@example.net\r\n\
Subject: hello\r\n\
Message-ID: <1@example.org>\r\n\
\r\n\
Hello Joe.\r\n\
From the start of a line.\r\n\
\xe2\x82\xac 8-bit text\r\n";

pub fn message_lf() -> Vec<u8> {
    MESSAGE.iter().copied().filter(|&b| b != b'\r').collect()
}
