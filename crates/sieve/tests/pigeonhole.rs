//! Pigeonhole conformance harness: runs every `*.svtest` of Dovecot Pigeonhole's test suite
//! through cursus-sieve's `vnd.dovecot.testsuite` implementation.
//!
//! Trusts the test tree only as data (it is LGPL test data, read in place and never
//! copied). Prints one line per file and a closing `N passed, M failed` over test blocks;
//! skips (and says so) when the tree is absent. It fails only when the pass count drops
//! below [`FLOOR`] (a regression guard) or when the interpreter panics.
//! Run: `cargo test -p cursus-sieve --test pigeonhole -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cursus_sieve::testsuite::{Loader, run_testsuite};
use cursus_sieve::{Config, DateTime, Host, ProgramRequest, ScriptLocation};

/// Test blocks that must pass (a regression guard). 622 pass on the development machine;
/// the margin covers the two vnd.dovecot.pipe blocks that depend on wall-clock timeouts
/// and can fail on a heavily loaded machine.
const FLOOR: usize = 618;

struct SuiteHost {
    dir: PathBuf,
    seen: HashMap<String, u64>,
}

impl Host for SuiteHost {
    fn load_script(
        &mut self,
        location: ScriptLocation,
        name: &str,
    ) -> Result<Option<String>, String> {
        let sub = match location {
            ScriptLocation::Personal => "included",
            ScriptLocation::Global => "included-global",
        };
        let p = self.dir.join(sub).join(format!("{name}.sieve"));
        Ok(std::fs::read_to_string(p).ok())
    }

    fn duplicate_seen(&mut self, key: &str) -> bool {
        self.seen.contains_key(key)
    }

    fn duplicate_mark(&mut self, key: &str, seconds: u64, _last: bool) {
        self.seen.insert(key.to_string(), seconds);
    }

    fn environment(&mut self, name: &str) -> Option<String> {
        // What Pigeonhole's testsuite reports, so its expectations hold.
        Some(match name {
            "name" => "Pigeonhole Sieve".into(),
            "version" => "0.5".into(),
            "location" => "MS".into(),
            "phase" => "during".into(),
            "domain" => "example.com".into(),
            "host" => "host.example.com".into(),
            "vnd.dovecot.default_mailbox" | "vnd.dovecot.default-mailbox" => "INBOX".into(),
            "vnd.dovecot.username" => "user".into(),
            _ => return None,
        })
    }

    fn run_program(&mut self, req: &ProgramRequest<'_>) -> Result<Vec<u8>, String> {
        run_program(req)
    }

    fn now(&mut self) -> DateTime {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        DateTime {
            timestamp: t,
            offset: 0,
        }
    }
}

/// Run a program from the configured bin directory, as Pigeonhole's extprograms do.
fn run_program(req: &ProgramRequest<'_>) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let kind = req.kind.name();
    let dir = req
        .settings
        .get(&format!("sieve_{kind}_bin_dir"))
        .ok_or("no bin dir configured")?;
    let path = Path::new(dir.trim()).join(req.name);
    if !path.is_file() {
        return Err(format!("program '{}' not found", req.name));
    }
    let timeout = req
        .settings
        .get(&format!("sieve_{kind}_exec_timeout"))
        .map(|t| t.trim().trim_end_matches('s').parse::<u64>().unwrap_or(10))
        .unwrap_or(10);
    let spec = |a: &str| {
        let t = a.trim();
        t.strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(t)
            .to_string()
    };
    let mut child = Command::new("/bin/sh")
        .arg(&path)
        .args(req.args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SENDER", spec(&req.envelope.from))
        .env("RECIPIENT", spec(&req.envelope.to))
        .env(
            "ORIG_RECIPIENT",
            spec(req.envelope.orig_to.as_deref().unwrap_or(&req.envelope.to)),
        )
        .env("HOST", "host.example.com")
        .env("HOME", std::env::temp_dir())
        .env("USER", "user")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let input = req.input.map(<[u8]>::to_vec).unwrap_or_default();
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if timeout > 0 && start.elapsed() > std::time::Duration::from_secs(timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("program timed out".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = writer.join();
    let out = reader.join().map_err(|_| "reader failed")?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("program exited with {status}"))
    }
}

fn suite_dir() -> PathBuf {
    match std::env::var_os("CURSUS_PIGEONHOLE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance/pigeonhole/tests"),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "svtest") {
            out.push(p);
        }
    }
}

fn count_blocks(src: &str) -> usize {
    src.lines()
        .filter(|l| {
            let t = l.trim_start();
            t.strip_prefix("test")
                .is_some_and(|r| r.starts_with([' ', '\t']) && r.trim_start().starts_with('"'))
        })
        .count()
}

fn tiers(root: &Path) -> BTreeMap<String, String> {
    let p = root.join("../../../reference/pigeonhole-tiers.txt");
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (t, f) = l.split_once(' ')?;
            Some((f.trim().trim_start_matches("./").to_string(), t.to_string()))
        })
        .collect()
}

/// Run one file: (passed blocks, total blocks, failure notes).
fn run_file(root: &Path, path: &Path) -> (usize, usize, Vec<String>) {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let total = count_blocks(&src);
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    let mut host = SuiteHost {
        dir: dir.clone(),
        seen: HashMap::new(),
    };
    let ldir = dir.clone();
    let loader: Loader = Box::new(move |p: &str| {
        let mut f = ldir.join(p);
        if f.extension().is_none() {
            f.set_extension("sieve");
        }
        std::fs::read_to_string(f).ok()
    });
    let config = Config::default();
    match run_testsuite(
        src.as_bytes(),
        &config,
        &mut host,
        loader,
        &dir.to_string_lossy(),
    ) {
        Err(e) => (
            0,
            total,
            vec![format!(
                "compile failed: {}",
                e.lines().next().unwrap_or("")
            )],
        ),
        Ok(records) => {
            let passed = records.iter().filter(|r| r.passed).count().min(total);
            let mut notes: Vec<String> = records
                .iter()
                .filter(|r| !r.passed)
                .map(|r| format!("{}: {}", r.name, r.reason))
                .collect();
            if records.len() < total {
                let last = records.last().map_or("(start)", |r| r.name.as_str());
                notes.push(format!(
                    "{} block(s) never ran (script stopped after '{last}')",
                    total - records.len()
                ));
            }
            (passed, total, notes)
        }
    }
}

#[test]
fn pigeonhole_conformance() {
    let root = suite_dir();
    if !root.is_dir() {
        println!(
            "pigeonhole: SKIPPED: test tree not found at {} (set CURSUS_PIGEONHOLE_DIR)",
            root.display()
        );
        return;
    }
    let tier_of = tiers(&root);
    let mut files = Vec::new();
    collect(&root, &mut files);
    let verbose = std::env::var_os("CURSUS_PIGEONHOLE_VERBOSE").is_some();
    let only = std::env::var("CURSUS_PIGEONHOLE_ONLY").ok();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut per_tier: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
    let mut panics = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .to_string();
        if only.as_ref().is_some_and(|o| !rel.contains(o.as_str())) {
            continue;
        }
        let r = std::panic::catch_unwind(|| run_file(&root, f));
        let (p, t, notes) = match r {
            Ok(x) => x,
            Err(_) => {
                panics.push(rel.clone());
                (
                    0,
                    count_blocks(&std::fs::read_to_string(f).unwrap_or_default()),
                    vec!["PANIC".into()],
                )
            }
        };
        passed += p;
        failed += t - p;
        let tier = tier_of.get(&rel).cloned().unwrap_or_else(|| "?".into());
        let e = per_tier.entry(tier.clone()).or_default();
        e.0 += p;
        e.1 += t - p;
        if p == t {
            e.2 += 1;
        }
        e.3 += 1;
        let status = if p == t { "PASS" } else { "FAIL" };
        println!("{status} [{tier}] {rel} ({p}/{t})");
        if p != t || verbose {
            for n in notes.iter().take(if verbose { 100 } else { 3 }) {
                println!("    {}", n.replace('\n', " "));
            }
        }
    }
    for (tier, (p, f, fp, fc)) in &per_tier {
        println!("tier {tier}: {p} passed, {f} failed blocks; {fp}/{fc} files fully passing");
    }
    println!("{passed} passed, {failed} failed");
    assert!(panics.is_empty(), "interpreter panicked on: {panics:?}");
    if only.is_none() {
        assert!(
            passed >= FLOOR,
            "conformance regressed: {passed} passed < floor {FLOOR}"
        );
    }
}
