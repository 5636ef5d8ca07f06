//! One run of the real `cursus` binary, as a user runs it, with what it printed and its exit
//! status; shared by the CLI test binaries.

use std::path::Path;
use std::process::Command;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cursus ARGS` in `cwd` and waits for it.
pub fn cursus(args: &[&str], cwd: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_cursus"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run cursus");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
