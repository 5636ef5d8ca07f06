//! `cursus retry test ADDRESS ERROR`: which retry rule applies and when the attempts are,
//! computed by the same code (cursus_route::retry) the daemon schedules with, and the
//! hints of the daemon's hints database that would change the decision (cursusd::hints
//! words them with the daemon's own verdict functions).
//!
//! Trusts nothing it is given; reads only the configuration file named (or the system
//! one) and the hints file, read-only. Returns (stdout, stderr, exit status).

use std::path::{Path, PathBuf};

use cursus_route::retry::{ErrorClass, RetryRules, format_duration};

/// Lines of attempt times printed before the rest is summarised.
const SHOWN: usize = 40;

/// Runs the command; (stdout, stderr, status).
pub fn run(
    address: &str,
    error: &str,
    config: Option<&Path>,
    sender: &str,
    hints: Option<&Path>,
) -> (String, String, u8) {
    let class = match ErrorClass::parse(error) {
        Ok(c) => c,
        Err(e) => return (String::new(), format!("cursus retry test: {e}\n"), 64),
    };
    let system = Path::new("/etc/cursus/cursus.toml");
    let file = config.or(system.exists().then_some(system));
    let root = nix::unistd::geteuid().is_root();
    let default_dir = if root {
        PathBuf::from(cursusd::daemon::SYSTEM_DATA_DIR)
    } else {
        cursusd::daemon::default_data_dir()
    };
    let mut daemon = cursusd::config::Config::single_user(&default_dir);
    let rules = match file {
        None => RetryRules::defaults(cursus_route::retry::DEFAULT_LIFETIME),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    return (
                        String::new(),
                        format!("cursus retry test: {}: {e}\n", path.display()),
                        1,
                    );
                }
            };
            let source = path.display().to_string();
            // The default rule bounces at the daemon's queue lifetime.
            if let Ok(c) = cursusd::config::Config::parse(&text, &source, &default_dir) {
                daemon = c;
            }
            let lifetime = cursusd::daemon::lifetime_secs(&daemon);
            match RetryRules::parse(&text, &source, lifetime) {
                Ok(r) => r,
                Err(errors) => {
                    let text: String = errors.iter().map(|e| format!("{e}\n")).collect();
                    return (String::new(), text, 1);
                }
            }
        }
    };
    let sender = if sender == "<>" { "" } else { sender };
    let rule = rules.find(address, class, sender);
    let mut out = String::new();
    out.push_str(&format!(
        "address {address}, error {class} ({}), sender <{sender}>\n",
        class.describe()
    ));
    out.push_str(&format!(
        "rule: {} (pattern {}, errors {}, senders {})\n",
        rule.origin,
        rule.pattern_text,
        rule.errors.as_ref().map_or("any".to_string(), |e| e
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(",")),
        rule.senders
            .as_ref()
            .map_or("any".to_string(), |s| s.written.join(","))
    ));
    out.push_str(&format!(
        "schedule: {}; bounce after {}\n",
        rule.schedule.written,
        format_duration(rule.lifetime)
    ));
    let times = rule.schedule.times(rule.lifetime);
    let now = jiff::Timestamp::now();
    out.push_str("attempts after arrival (the first is at arrival):\n");
    for (i, t) in times.iter().enumerate() {
        if i == SHOWN && times.len() > SHOWN + 1 {
            out.push_str(&format!("  ... {} more\n", times.len() - SHOWN - 1));
        }
        if i >= SHOWN && i + 1 < times.len() {
            continue;
        }
        let at = now
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(*t).unwrap_or(i64::MAX / 2),
            ))
            .map(|ts| ts.strftime("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let last = i + 1 == times.len();
        out.push_str(&format!(
            "  {:>3}  +{:<12} {at}{}\n",
            i + 2,
            format_duration(*t),
            if last {
                "  (the lifetime: a failure here bounces)"
            } else {
                ""
            }
        ));
    }
    let found = daemon.data_dir.join(cursusd::hints::FILE);
    let path = match hints {
        Some(p) => Some(p.to_path_buf()),
        None => found.exists().then_some(found),
    };
    if let Some(path) = path {
        let now = jiff::Timestamp::now().as_second();
        match cursusd::hints::explain(&path, &daemon.hints, address, class, now) {
            Ok(lines) if lines.is_empty() => out.push_str(&format!(
                "hints ({}): none that change this decision\n",
                path.display()
            )),
            Ok(lines) => {
                out.push_str(&format!("hints ({}):\n", path.display()));
                for l in lines {
                    out.push_str(&format!("  {l}\n"));
                }
            }
            Err(e) => {
                return (out, format!("cursus retry test: hints: {e}\n"), 1);
            }
        }
    }
    (out, String::new(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_matching_rule_and_its_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cursus.toml");
        std::fs::write(
            &path,
            "queue_lifetime_days = 2\n[[retry]]\npattern = \"slow.example\"\nerrors = [\"rcpt\"]\nschedule = \"F,1h,20m\"\nlifetime = \"2h\"\n",
        )
        .expect("write");
        let (out, err, code) = run("joe@slow.example", "rcpt", Some(&path), "", None);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(":2 (pattern slow.example, errors rcpt"),
            "{out}"
        );
        assert!(out.contains("+20m"), "{out}");
        assert!(out.contains("+2h "), "{out}");
        assert!(out.contains("a failure here bounces"), "{out}");
        // Another class falls to the default, which bounces at the queue lifetime.
        let (out, _, _) = run("joe@slow.example", "data", Some(&path), "", None);
        assert!(out.contains("built-in default"), "{out}");
        assert!(out.contains("bounce after 2d"), "{out}");
        let (_, err, code) = run("joe@slow.example", "rcp", Some(&path), "", None);
        assert_eq!(code, 64);
        assert!(err.contains("did you mean `rcpt`"), "{err}");
    }

    #[test]
    fn hints_that_change_the_decision_are_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("cursus.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[hints]\ntimeout_bounce_memory = \"2d\"\n",
                dir.path().display()
            ),
        )
        .expect("write");
        // No hints file yet: nothing about hints.
        let (out, _, code) = run("joe@slow.example", "timeout", Some(&config), "", None);
        assert_eq!(code, 0);
        assert!(!out.contains("hints"), "{out}");
        // The daemon's file in the data directory is found.
        let db = dir.path().join(cursusd::hints::FILE);
        let (store, _) = cursusd::hints::store::Store::open(&db).expect("db");
        let an_hour_ago = jiff::Timestamp::now().as_second() - 3600;
        store
            .address_timeout_bounce("joe@slow.example", an_hour_ago)
            .expect("write");
        drop(store);
        let (out, err, code) = run("joe@slow.example", "timeout", Some(&config), "", None);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("hints ("), "{out}");
        assert!(out.contains("bounced after timing out 1h ago"), "{out}");
        assert!(out.contains("bounces at once"), "{out}");
        let (out, _, _) = run("joe@slow.example", "rcpt", Some(&config), "", None);
        assert!(out.contains("follows the rule"), "{out}");
        let (out, _, _) = run("ann@slow.example", "timeout", Some(&config), "", Some(&db));
        assert!(out.contains("none that change this decision"), "{out}");
        let (_, err, code) = run(
            "ann@slow.example",
            "timeout",
            Some(&config),
            "",
            Some(&dir.path().join("missing.db")),
        );
        assert_eq!(code, 1);
        assert!(err.contains("missing.db"), "{err}");
    }
}
