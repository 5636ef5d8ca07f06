//! Running Pigeonhole's sieve-test(1) on one case, from a scratch directory.
//!
//! Trusts the sieve-test binary only as a second opinion. As root it runs it as nobody
//! through setpriv(1) (sieve-test refuses root), with a clean environment and a minimal
//! configuration of its own. A sieve-test that is installed but does not work fails the
//! test; one that is absent is a skip (the caller prints it).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::verdict::{Report, SMALL, Verdict, delivery, parse_report};

pub(crate) struct Pigeonhole {
    binary: PathBuf,
    as_nobody: bool,
    dir: tempfile::TempDir,
}

impl Pigeonhole {
    pub(crate) fn find() -> Result<Pigeonhole, String> {
        let binary = std::env::var_os("CURSUS_SIEVE_TEST")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/sieve-test"));
        if !binary.is_file() {
            return Err(format!(
                "{} not found (apt-get install dovecot-sieve)",
                binary.display()
            ));
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id -u: {e}"))?;
        let as_nobody = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_nobody && !Path::new("/usr/bin/setpriv").exists() {
            return Err("running as root and setpriv(1) is missing".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        set_mode(dir.path(), 0o777)?;
        let conf = format!(
            "protocols =\nmail_location = maildir:{}/mail\n",
            dir.path().display()
        );
        write_public(&dir.path().join("sieve.conf"), conf.as_bytes())?;
        let ph = Pigeonhole {
            binary,
            as_nobody,
            dir,
        };
        // An installed but unusable sieve-test is a broken test machine, not a skip.
        let probe = ph.run(
            "keep;\n",
            SMALL.as_bytes(),
            "a@example.org",
            "b@example.org",
        );
        assert_eq!(
            probe.verdict,
            delivery(&["INBOX"], &[]),
            "sieve-test does not work here:\n{}",
            probe.text
        );
        Ok(ph)
    }

    pub(crate) fn run(&self, script: &str, message: &[u8], from: &str, to: &str) -> Report {
        let d = self.dir.path();
        let (script_path, message_path) = (d.join("case.sieve"), d.join("case.eml"));
        if let Err(e) = write_public(&script_path, script.as_bytes())
            .and_then(|()| write_public(&message_path, message))
        {
            panic!("writing the case: {e}");
        }
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&self.binary);
            c
        } else {
            Command::new(&self.binary)
        };
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", d)
            .current_dir(d)
            .arg("-C")
            .arg("-c")
            .arg(d.join("sieve.conf"))
            .args(["-f", from, "-a", to, "-r", to])
            .arg(&script_path)
            .arg(&message_path);
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("running {}: {e}", self.binary.display()),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (verdict, lines) = if out.status.success() {
            parse_report(&stdout)
        } else if stderr.contains("failed to compile") {
            (Verdict::CompileError, Vec::new())
        } else {
            (Verdict::RuntimeError, Vec::new())
        };
        Report {
            verdict,
            lines,
            text: format!("{stdout}{stderr}"),
        }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

pub(crate) fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    set_mode(path, 0o644)
}
