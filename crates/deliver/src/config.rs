//! Configuration of cursus-deliver: an optional system file, an optional per-user file, and
//! `-o` overrides, each a small TOML document with the same keys.
//!
//! Trusts the system file (root-owned, read before privileges are dropped) for every key;
//! trusts the user's file only for keys that affect that user's own mail (it cannot set
//! `allow_root`, the administrator's Sieve scripts `sieve_before`, `sieve_after` and
//! `sieve_global_dir`, nor the `sendmail` program; `-o` may set only the last). Fails with
//! a [`ConfigError`] naming the file, line and column, and for a misspelt key a
//! suggestion; the caller exits 78.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cursus_mail::diagnostic::{line_col, suggest, unknown_field as unknown_key};
use serde::Deserialize;

/// Where the system file lives when `-c` is not given.
pub const SYSTEM_CONFIG: &str = cursus_front::plan::SYSTEM_CONFIG;
/// The per-user file, relative to the home directory.
pub const USER_CONFIG: &str = cursus_front::plan::USER_CONFIG;

/// One configuration file as written; every key optional.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub destination: Option<String>,
    pub folder_autocreate: Option<bool>,
    pub extension_folders: Option<bool>,
    pub recipient_delimiter: Option<String>,
    pub quota: Option<Size>,
    pub quota_messages: Option<u64>,
    pub quota_full: Option<QuotaFull>,
    pub max_message_size: Option<Size>,
    pub lock_timeout: Option<u64>,
    pub mbox_dotlock: Option<bool>,
    pub fsync: Option<Fsync>,
    pub allow_root: Option<bool>,
    pub sieve: Option<String>,
    pub sieve_before: Option<Vec<String>>,
    pub sieve_after: Option<Vec<String>>,
    pub sieve_global_dir: Option<String>,
    pub sieve_reject: Option<SieveReject>,
    pub sendmail: Option<String>,
}

const KEYS: &[&str] = &[
    "destination",
    "folder_autocreate",
    "extension_folders",
    "recipient_delimiter",
    "quota",
    "quota_messages",
    "quota_full",
    "max_message_size",
    "lock_timeout",
    "mbox_dotlock",
    "fsync",
    "allow_root",
    "sieve",
    "sieve_before",
    "sieve_after",
    "sieve_global_dir",
    "sieve_reject",
    "sendmail",
];

/// The command redirect, vacation, notify and MDN rejections are handed to.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// What over quota means for the MTA: a bounce or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaFull {
    Permanent,
    Temporary,
}

/// What a Sieve `reject` does in an MDA (RFC 5429 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SieveReject {
    /// Print `5.7.1 reason` and exit 77: the MTA bounces with our text.
    Exit,
    /// Mail an RFC 5429 §2.1.1 rejection (an MDN) to the envelope sender and exit 0.
    Mdn,
}

/// How much of a delivery is forced to disk before we report success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// The message file and the directory entry that names it (the default): after exit 0
    /// the message survives a crash.
    Full,
    /// The message file only, as Postfix local(8) and procmail do: after a crash the file
    /// may be left unnamed or in tmp/.
    File,
    /// Nothing: for throw-away mailboxes and tests.
    None,
}

impl Fsync {
    pub fn file(self) -> bool {
        self != Fsync::None
    }

    pub fn directory(self) -> bool {
        self == Fsync::Full
    }
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(true) => Ok(Fsync::Full),
            Raw::Flag(false) => Ok(Fsync::None),
            Raw::Text(t) => match t.as_str() {
                "full" => Ok(Fsync::Full),
                "file" => Ok(Fsync::File),
                "none" => Ok(Fsync::None),
                other => Err(serde::de::Error::custom(format!(
                    "invalid fsync {other:?}: use \"full\" (file and directory, the default), \"file\" or \"none\""
                ))),
            },
        }
    }
}

/// A byte count written as a number or a string with a K, M or G suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {t:?}: write a number of bytes, or one with a K, M or G suffix such as \"100M\""
                ))
            }),
        }
    }
}

/// Parses `1234`, `10K`, `100M`, `2G` (case-insensitive, optional trailing `B`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (digits, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1u64 << 10),
        'm' | 'M' => (&t[..t.len() - 1], 1 << 20),
        'g' | 'G' => (&t[..t.len() - 1], 1 << 30),
        't' | 'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// The settings in force after merging system file, user file and overrides.
#[derive(Debug, Clone)]
pub struct Settings {
    pub destination: String,
    pub folder_autocreate: bool,
    pub extension_folders: bool,
    pub recipient_delimiter: String,
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
    pub quota_full: QuotaFull,
    pub max_message_size: Option<u64>,
    pub lock_timeout: Duration,
    pub mbox_dotlock: bool,
    pub fsync: Fsync,
    pub allow_root: bool,
    /// The user's active script: `None` looks for `~/.dovecot.sieve`; `Some("")` turns
    /// Sieve off; otherwise `~/path` or an absolute path.
    pub sieve: Option<String>,
    /// Administrator scripts run before the user's (system file only).
    pub sieve_before: Vec<PathBuf>,
    /// Administrator scripts run after the user's (system file only).
    pub sieve_after: Vec<PathBuf>,
    /// Where `include :global "NAME"` finds `NAME.sieve` (system file only).
    pub sieve_global_dir: Option<PathBuf>,
    pub sieve_reject: SieveReject,
    /// The sendmail-compatible command as argv (program first); never run by a shell.
    pub sendmail: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            destination: format!("maildir:~/{}", cursus_front::plan::DEFAULT_MAILDIR),
            folder_autocreate: true,
            extension_folders: false,
            recipient_delimiter: "+".into(),
            quota_bytes: None,
            quota_messages: None,
            quota_full: QuotaFull::Permanent,
            max_message_size: None,
            lock_timeout: Duration::from_secs(60),
            mbox_dotlock: true,
            fsync: Fsync::Full,
            allow_root: false,
            sieve: None,
            sieve_before: Vec::new(),
            sieve_after: Vec::new(),
            sieve_global_dir: None,
            sieve_reject: SieveReject::Exit,
            sendmail: vec![DEFAULT_SENDMAIL.to_string()],
        }
    }
}

/// Who wrote a file, which decides the keys it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    System,
    User,
    Override,
}

impl Settings {
    /// Applies one file on top of the current settings.
    pub fn apply(
        &mut self,
        file: &ConfigFile,
        origin: Origin,
        source: &str,
    ) -> Result<(), ConfigError> {
        let nonzero = |v: u64| (v > 0).then_some(v);
        if let Some(v) = &file.destination {
            self.destination = v.clone();
        }
        if let Some(v) = file.folder_autocreate {
            self.folder_autocreate = v;
        }
        if let Some(v) = file.extension_folders {
            self.extension_folders = v;
        }
        if let Some(v) = &file.recipient_delimiter {
            self.recipient_delimiter = v.clone();
        }
        if let Some(v) = file.quota {
            self.quota_bytes = nonzero(v.0);
        }
        if let Some(v) = file.quota_messages {
            self.quota_messages = nonzero(v);
        }
        if let Some(v) = file.quota_full {
            self.quota_full = v;
        }
        if let Some(v) = file.max_message_size {
            self.max_message_size = nonzero(v.0);
        }
        if let Some(v) = file.lock_timeout {
            self.lock_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.mbox_dotlock {
            self.mbox_dotlock = v;
        }
        if let Some(v) = file.fsync {
            self.fsync = v;
        }
        if let Some(v) = file.allow_root {
            if origin != Origin::System {
                // A user's file or an MTA-supplied -o must not be able to unlock delivery as
                // root: only the administrator's file may name that setting.
                return Err(ConfigError::new(
                    source,
                    None,
                    "allow_root may only be set in the system configuration file",
                ));
            }
            self.allow_root = v;
        }
        if let Some(v) = &file.sieve {
            let v = v.trim();
            if !(v.is_empty() || v.starts_with("~/") || v.starts_with('/')) {
                return Err(ConfigError::new(
                    source,
                    None,
                    format!("sieve = {v:?}: write \"~/path\", an absolute path, or \"\" for none"),
                ));
            }
            self.sieve = Some(v.to_string());
        }
        // Administrator scripts run for every user and see every message: only the
        // administrator's file may name them. From a user's file they would be pointless
        // (the user has their own script); from -o, text an MTA passes could name any file.
        if let Some(v) = &file.sieve_before {
            system_only(origin, source, "sieve_before")?;
            self.sieve_before = absolute_paths(v, source, "sieve_before")?;
        }
        if let Some(v) = &file.sieve_after {
            system_only(origin, source, "sieve_after")?;
            self.sieve_after = absolute_paths(v, source, "sieve_after")?;
        }
        if let Some(v) = &file.sieve_global_dir {
            system_only(origin, source, "sieve_global_dir")?;
            self.sieve_global_dir = if v.is_empty() {
                None
            } else {
                absolute_paths(std::slice::from_ref(v), source, "sieve_global_dir")?.pop()
            };
        }
        if let Some(v) = file.sieve_reject {
            self.sieve_reject = v;
        }
        if let Some(v) = &file.sendmail {
            if origin == Origin::User {
                // Attack: a user without a shell (IMAP/FTP only) who can upload a
                // deliver.toml and an executable would get a program run for them.
                return Err(ConfigError::new(
                    source,
                    None,
                    "sendmail may only be set in the system configuration file or with -o",
                ));
            }
            let argv: Vec<String> = v.split_ascii_whitespace().map(str::to_string).collect();
            if argv.first().is_none_or(|p| !p.starts_with('/')) {
                return Err(ConfigError::new(
                    source,
                    None,
                    format!(
                        "sendmail = {v:?}: write an absolute path to the program, optionally followed by arguments"
                    ),
                ));
            }
            self.sendmail = argv;
        }
        Ok(())
    }
}

fn system_only(origin: Origin, source: &str, key: &str) -> Result<(), ConfigError> {
    if origin == Origin::System {
        Ok(())
    } else {
        Err(ConfigError::new(
            source,
            None,
            format!("{key} may only be set in the system configuration file"),
        ))
    }
}

fn absolute_paths(values: &[String], source: &str, key: &str) -> Result<Vec<PathBuf>, ConfigError> {
    values
        .iter()
        .map(|v| {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(ConfigError::new(
                    source,
                    None,
                    format!("{key}: {v:?} is not an absolute path"),
                ))
            }
        })
        .collect()
}

/// A configuration problem, with where it is and, when we can tell, what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub fn new(source: &str, line: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        ConfigError {
            source: source.to_string(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Parses one file's text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str::<ConfigFile>(text).map_err(|e| {
        let line = e.span().map(|span| line_col(text, span.start));
        let mut message = e.message().trim().to_string();
        if let Some(unknown) = unknown_key(&message) {
            message = match suggest(&unknown, KEYS) {
                Some(s) => format!("unknown setting `{unknown}`; did you mean `{s}`?"),
                None => format!(
                    "unknown setting `{unknown}`; known settings: {}",
                    KEYS.join(", ")
                ),
            };
        }
        ConfigError::new(source, line, message)
    })
}

/// Reads and parses a file; `Ok(None)` when it does not exist. The file must belong to
/// root or to `owner` and must not be writable by group or others.
///
/// Attack stopped: a configuration file someone else can write lets them choose where this
/// user's mail goes (and, for the system file, unlock `allow_root`, making a root
/// delivery write attacker-chosen text to an attacker-chosen path).
pub fn load(path: &Path, owner: u32) -> Result<Option<ConfigFile>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let source = path.display().to_string();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::new(&source, None, format!("cannot read: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| ConfigError::new(&source, None, format!("cannot stat: {e}")))?;
    if path == Path::new("/dev/null") {
        // `-c /dev/null`: the conventional way to say "no system configuration".
        return Ok(Some(ConfigFile::default()));
    }
    if !meta.is_file() {
        return Err(ConfigError::new(&source, None, "not a regular file"));
    }
    if meta.uid() != 0 && meta.uid() != owner {
        return Err(ConfigError::new(
            &source,
            None,
            format!(
                "owned by uid {}, not by root or uid {owner}; refusing to trust it",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ConfigError::new(
            &source,
            None,
            format!(
                "writable by group or others (mode {:o}); run chmod go-w on it",
                meta.mode() & 0o7777
            ),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| ConfigError::new(&source, None, format!("cannot read: {e}")))?;
    parse(&text, &source).map(Some)
}

/// Turns `-o key=value` strings into one document: the value is taken as TOML when it
/// parses as such (numbers, booleans, quoted strings), else as a plain string.
pub fn parse_overrides(overrides: &[String]) -> Result<ConfigFile, ConfigError> {
    let mut doc = String::new();
    for o in overrides {
        let Some((key, value)) = o.split_once('=') else {
            return Err(ConfigError::new(
                "-o",
                None,
                format!("{o:?} is not KEY=VALUE"),
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new(
                "-o",
                None,
                format!("{key:?} is not a setting name"),
            ));
        }
        let value = value.trim();
        let as_toml = format!("{key} = {value}\n");
        if !value.is_empty() && toml::from_str::<toml::Table>(&as_toml).is_ok() {
            doc.push_str(&as_toml);
        } else {
            doc.push_str(&format!(
                "{key} = {}\n",
                toml::Value::String(value.to_string())
            ));
        }
    }
    parse(&doc, "-o")
}

/// The per-user file for a home directory.
pub fn user_config_path(home: &Path) -> PathBuf {
    home.join(USER_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (t, want) in [
            ("100", Some(100)),
            ("10K", Some(10240)),
            ("100M", Some(100 << 20)),
            ("2g", Some(2 << 30)),
            ("5MB", Some(5 << 20)),
            ("x", None),
            ("", None),
            ("-1", None),
        ] {
            assert_eq!(parse_size(t), want, "{t}");
        }
    }

    #[test]
    fn errors_name_line_column_and_suggest() {
        let e = parse(
            "fsync = true\ndestinaton = \"mbox:/x\"\n",
            "/etc/cursus/deliver.toml",
        )
        .expect_err("typo");
        assert_eq!(e.line, Some((2, 1)));
        assert!(e.to_string().starts_with("/etc/cursus/deliver.toml:2:1: unknown setting `destinaton`; did you mean `destination`?"), "{e}");

        let e = parse("quota = \"lots\"\n", "f").expect_err("bad size");
        assert_eq!(e.line.map(|l| l.0), Some(1));
        assert!(e.message.contains("invalid size"), "{e}");

        let e = parse("quota_full = \"sometimes\"\n", "f").expect_err("bad enum");
        assert!(e.message.contains("permanent"), "{e}");

        let e = parse("[x\n", "f").expect_err("syntax");
        assert_eq!(e.line.map(|l| l.0), Some(1));
    }

    #[test]
    fn user_file_cannot_allow_root() {
        let f = parse("allow_root = true\n", "u").expect("parses");
        let mut s = Settings::default();
        assert!(s.apply(&f, Origin::User, "u").is_err());
        assert!(s.apply(&f, Origin::Override, "-o").is_err());
        assert!(s.apply(&f, Origin::System, "s").is_ok());
        assert!(s.allow_root);
    }

    #[test]
    fn user_file_cannot_name_administrator_scripts_or_sendmail() {
        for text in [
            "sieve_before = [\"/etc/cursus/spam.sieve\"]\n",
            "sieve_after = [\"/etc/cursus/after.sieve\"]\n",
            "sieve_global_dir = \"/etc/cursus/sieve\"\n",
        ] {
            let f = parse(text, "u").expect("parses");
            let mut s = Settings::default();
            let e = s.apply(&f, Origin::User, "u").expect_err(text);
            assert!(e.message.contains("system configuration"), "{e}");
            assert!(s.apply(&f, Origin::Override, "-o").is_err(), "{text}");
            assert!(s.apply(&f, Origin::System, "s").is_ok(), "{text}");
        }
        let f = parse("sendmail = \"/home/joe/evil\"\n", "u").expect("parses");
        assert!(Settings::default().apply(&f, Origin::User, "u").is_err());
        let mut s = Settings::default();
        assert!(s.apply(&f, Origin::Override, "-o").is_ok());
        assert_eq!(s.sendmail, vec!["/home/joe/evil".to_string()]);
    }

    #[test]
    fn sieve_settings_parse_and_check() {
        let f = parse(
            "sieve = \"~/sieve/main.sieve\"\nsieve_reject = \"mdn\"\nsendmail = \"/usr/sbin/sendmail -oi\"\nsieve_before = [\"/a.sieve\", \"/b.sieve\"]\n",
            "s",
        )
        .expect("parses");
        let mut s = Settings::default();
        s.apply(&f, Origin::System, "s").expect("applies");
        assert_eq!(s.sieve.as_deref(), Some("~/sieve/main.sieve"));
        assert_eq!(s.sieve_reject, SieveReject::Mdn);
        assert_eq!(s.sendmail, vec!["/usr/sbin/sendmail", "-oi"]);
        assert_eq!(
            s.sieve_before,
            vec![PathBuf::from("/a.sieve"), PathBuf::from("/b.sieve")]
        );
        for bad in [
            "sieve = \"relative\"\n",
            "sieve_before = [\"rel.sieve\"]\n",
            "sendmail = \"sendmail\"\n",
            "sendmail = \"\"\n",
        ] {
            let f = parse(bad, "s").expect("parses");
            assert!(
                Settings::default().apply(&f, Origin::System, "s").is_err(),
                "{bad}"
            );
        }
        assert!(parse("sieve_reject = \"bounce\"\n", "s").is_err());
        let f = parse_overrides(&["sieve=".into()]).expect("parses");
        let mut s = Settings::default();
        s.apply(&f, Origin::Override, "-o").expect("applies");
        assert_eq!(s.sieve.as_deref(), Some(""));
    }

    #[test]
    fn overrides_take_toml_or_plain_strings() {
        let f = parse_overrides(&[
            "quota_full=temporary".into(),
            "fsync=false".into(),
            "quota=\"10M\"".into(),
            "lock_timeout=5".into(),
        ])
        .expect("parses");
        assert_eq!(f.quota_full, Some(QuotaFull::Temporary));
        assert_eq!(f.fsync, Some(Fsync::None));
        assert_eq!(f.quota, Some(Size(10 << 20)));
        assert_eq!(f.lock_timeout, Some(5));
        assert!(parse_overrides(&["nonsense".into()]).is_err());
        assert!(parse_overrides(&["fsinc=true".into()]).is_err());
    }
}
