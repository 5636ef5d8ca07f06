//! `cursus-lda policy generate`: write a destination policy from the aliases file and the
//! users' .forward files, so an administrator starts from what the system already does
//! instead of a blank page, and reviews every rule (each says which alias or whose
//! .forward line asked for it).
//!
//! Trusts the aliases and passwd files it is pointed at (root's) and nothing in a user's
//! .forward: each is opened with the checks of [`crate::forward::open_checked`] (no
//! symlinks, a regular file owned by that user, not group- or world-writable, at most 64
//! KiB) and skipped with a comment naming the reason otherwise. Runs as root; writes only
//! the output it is asked for and never overwrites a file without `--force`.
//!
//! Fails with exit status 1 for an aliases file with errors (every error with its line) or
//! an output file that exists, 2 when a file cannot be read or written.
//!
//! Attacks stopped: a user's .forward that is a symlink to another user's file, or that
//! others can write, turning into a rule for that user (skipped); a `|command` with shell
//! syntax or a relative program becoming a command rule (listed as a comment, for the
//! administrator to decide); alias file deliveries granted to a real user instead of the
//! unprivileged account Postfix uses for them; a user below the uid floor getting rules
//! through their .forward (skipped); a generated file that does not load (it is parsed
//! with [`policy::parse_system`] before it is written).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cursus_mail::aliases::{self, Target};
use cursus_mail::forward;

use crate::destination::{Destination, MailPath};
use crate::forward::{OpenError, open_checked};
use crate::policy::{self, Policy, Request, valid_user};

/// The aliases file read when `--aliases` is not given.
pub const ALIASES: &str = "/etc/aliases";
/// The user database read when `--passwd` is not given.
pub const PASSWD: &str = "/etc/passwd";
/// The account Postfix's local(8) uses for alias deliveries when root owns the aliases
/// database (`default_privs`).
pub const DEFAULT_PRIVS: &str = "nobody";

/// Options of `policy generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The aliases file (aliases(5) syntax).
    #[arg(long, value_name = "FILE", default_value = ALIASES)]
    pub aliases: PathBuf,
    /// The user database, passwd(5) lines; users' .forward files are read from their homes.
    #[arg(long, value_name = "FILE", default_value = PASSWD)]
    pub passwd: PathBuf,
    /// Skip users below this uid; also written as the policy's min_uid.
    #[arg(long, value_name = "N", default_value_t = policy::DEFAULT_MIN_UID)]
    pub min_uid: u32,
    /// Write the policy here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace FILE given with --output if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// Why no policy was generated.
#[derive(Debug)]
pub enum GenerateError {
    Read {
        path: PathBuf,
        error: io::Error,
    },
    Aliases {
        path: PathBuf,
        errors: Vec<aliases::AliasError>,
    },
    /// The generated text did not load: a bug here, reported rather than written.
    Invalid(policy::PolicyErrors),
}

impl std::fmt::Display for GenerateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenerateError::Read { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            GenerateError::Aliases { path, errors } => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: {e}", path.display())?;
                }
                Ok(())
            }
            GenerateError::Invalid(e) => write!(f, "the generated policy does not load: {e}"),
        }
    }
}

/// One passwd(5) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub home: String,
}

/// Reads passwd(5) lines; a line that is not `name:pw:uid:gid:gecos:home:shell` is
/// returned as `Err((line, why))` so the caller can say it was skipped.
pub fn parse_passwd(text: &str) -> Vec<Result<PasswdEntry, (usize, String)>> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let entry = match fields.as_slice() {
            [name, _, uid, _, _, home, _] => match uid.parse::<u32>() {
                Ok(uid) => Ok(PasswdEntry {
                    name: name.to_string(),
                    uid,
                    home: home.to_string(),
                }),
                Err(_) => Err((i + 1, format!("uid {uid:?} is not a number"))),
            },
            _ => Err((i + 1, "not seven `:`-separated fields".to_string())),
        };
        found.push(entry);
    }
    found
}

/// Where a target was written, for the rule's comment.
fn alias_origin(alias: &aliases::Alias) -> String {
    format!("alias {:?} (aliases line {})", alias.name, alias.line)
}

fn forward_origin(user: &str, line: usize) -> String {
    format!("{user}'s ~/.forward line {line}")
}

/// A command rule being collected: one per program.
struct CommandRule {
    program: MailPath,
    arguments: bool,
    origins: Vec<String>,
}

/// A mailbox rule being collected: one per (kind, path).
struct FileRule {
    maildir: bool,
    /// `~/...` or `/...`, a valid policy template.
    path: String,
    users: BTreeSet<String>,
    origins: Vec<String>,
}

#[derive(Default)]
struct Collected {
    commands: Vec<CommandRule>,
    files: Vec<FileRule>,
    /// Comments for what became no rule, in the order found.
    notes: Vec<String>,
}

/// Characters that make a command line shell syntax rather than a program and arguments.
const SHELL_SYNTAX: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '*', '?', '[', ']', '{', '}', '!', '~', '\'', '"',
    '\\', '#', '=',
];

impl Collected {
    fn command(&mut self, text: &str, origin: String) {
        if text.contains(SHELL_SYNTAX) {
            self.notes.push(format!(
                "command {text:?} from {origin}: not listed, it uses shell syntax (cursus-lda \
                 never runs a shell; list a wrapper program instead)"
            ));
            return;
        }
        let mut words = text.split_whitespace();
        let Some(program) = words.next() else {
            return;
        };
        let arguments = words.next().is_some();
        let program = match MailPath::parse(program) {
            Ok(p) if p.components().next().is_some() => p,
            _ => {
                self.notes.push(format!(
                    "command {text:?} from {origin}: not listed, {program:?} is not an \
                     absolute normalised path (a relative program depends on the PATH)"
                ));
                return;
            }
        };
        match self.commands.iter_mut().find(|c| c.program == program) {
            Some(rule) => {
                rule.arguments |= arguments;
                rule.origins.push(origin);
            }
            None => self.commands.push(CommandRule {
                program,
                arguments,
                origins: vec![origin],
            }),
        }
    }

    /// A `/file` (or `~/file`) target for `user`; `home` expands `~/` to check it.
    fn file(&mut self, text: &str, user: &str, origin: String, defaults: &Policy, who: Who<'_>) {
        let maildir = text.ends_with('/') && text.len() > 1;
        let path = if maildir {
            text.trim_end_matches('/')
        } else {
            text
        };
        let absolute = match path.strip_prefix("~/") {
            Some(rest) => who
                .home
                .map(|h| format!("{}/{rest}", h.trim_end_matches('/'))),
            None => Some(path.to_string()),
        };
        let checked = absolute
            .as_deref()
            .ok_or_else(|| "`~/` means nothing for an alias".to_string())
            .and_then(|a| MailPath::parse(a).map_err(|e| e.to_string()));
        let parsed = match checked {
            Ok(p) if p.components().next().is_some() => p,
            Ok(_) => {
                self.notes.push(format!(
                    "file {text:?} from {origin}: not listed, it is `/`"
                ));
                return;
            }
            Err(why) => {
                self.notes.push(format!(
                    "file {text:?} from {origin}: not listed, not an absolute normalised path: {why}"
                ));
                return;
            }
        };
        if path.contains('$') {
            self.notes.push(format!(
                "file {text:?} from {origin}: not listed, `$` is not allowed in a policy path"
            ));
            return;
        }
        let destination = if maildir {
            Destination::Maildir(parsed)
        } else {
            Destination::Mbox(parsed)
        };
        let request = Request {
            user,
            uid: who.uid,
            home: who.home.unwrap_or("/nonexistent"),
            destination: &destination,
        };
        if let policy::Decision::Allowed { rule, .. } = policy::check(defaults, &request) {
            self.notes.push(format!(
                "file {text:?} from {origin}: already allowed by rule `{rule}`"
            ));
            return;
        }
        match self
            .files
            .iter_mut()
            .find(|f| f.maildir == maildir && f.path == path)
        {
            Some(rule) => {
                rule.users.insert(user.to_string());
                rule.origins.push(origin);
            }
            None => self.files.push(FileRule {
                maildir,
                path: path.to_string(),
                users: BTreeSet::from([user.to_string()]),
                origins: vec![origin],
            }),
        }
    }
}

/// Whose target is being collected: uid and home for the defaults check.
#[derive(Clone, Copy)]
struct Who<'a> {
    uid: u32,
    home: Option<&'a str>,
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A comment line: control characters are escaped so a value cannot end the comment.
fn comment(out: &mut String, text: &str) {
    let clean: String = text
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let _ = writeln!(out, "# {clean}");
}

/// A rule name from `base`: letters, digits, `-`, `_`, at most 64 bytes, not yet used.
fn unique_name(base: &str, used: &mut BTreeSet<String>) -> String {
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if clean.is_empty() {
        clean.push_str("rule");
    }
    let mut name = clean.clone();
    let mut n = 2;
    while used.contains(&name) {
        name = format!("{clean}-{n}");
        n += 1;
    }
    used.insert(name.clone());
    name
}

fn read_file(path: &Path) -> Result<String, GenerateError> {
    std::fs::read_to_string(path).map_err(|error| GenerateError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Builds the policy text from the files named in `args` (the output options are not
/// used here). The text is checked with [`policy::parse_system`] before it is returned.
pub fn generate(args: &GenerateArgs) -> Result<String, GenerateError> {
    let header_min_uid = format!("min_uid = {}\n", args.min_uid);
    let defaults =
        policy::parse_system(&format!("{header_min_uid}{}", policy::DEFAULTS), "defaults")
            .map_err(GenerateError::Invalid)?;
    let mut collected = Collected::default();
    let mut users_notes: Vec<String> = Vec::new();

    // Aliases: deliveries to files and commands run as default_privs.
    let alias_text = match std::fs::read_to_string(&args.aliases) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(GenerateError::Read {
                path: args.aliases.clone(),
                error,
            });
        }
    };
    // nobody's usual uid; only used to ask whether a default rule already allows a file.
    let nobody = Who {
        uid: 65534,
        home: None,
    };
    match &alias_text {
        None => collected.notes.push(format!(
            "{}: no such file; no alias rules",
            args.aliases.display()
        )),
        Some(text) => {
            let parsed = aliases::parse(text).map_err(|errors| GenerateError::Aliases {
                path: args.aliases.clone(),
                errors,
            })?;
            for alias in &parsed {
                for target in &alias.targets {
                    let origin = alias_origin(alias);
                    match target {
                        Target::Command(c) => collected.command(c, origin),
                        Target::File(f) => {
                            collected.file(f, DEFAULT_PRIVS, origin, &defaults, nobody)
                        }
                        Target::Include(f) => collected.notes.push(format!(
                            ":include:{f} from {origin}: not read; list its commands and files by hand"
                        )),
                        Target::Address(_) | Target::Local(_) => {}
                    }
                }
            }
        }
    }

    // Users' .forward files, read as root with the checks the LDA makes as the user.
    let passwd = read_file(&args.passwd)?;
    let mut seen = BTreeSet::new();
    for entry in parse_passwd(&passwd) {
        let entry = match entry {
            Ok(entry) => entry,
            Err((line, why)) => {
                users_notes.push(format!(
                    "{} line {line} skipped: {why}",
                    args.passwd.display()
                ));
                continue;
            }
        };
        let name = &entry.name;
        if !seen.insert(name.clone()) {
            users_notes.push(format!("user {name:?} skipped: listed twice"));
            continue;
        }
        if entry.uid < args.min_uid {
            users_notes.push(format!(
                "user {name:?} (uid {}) skipped: below min_uid {}",
                entry.uid, args.min_uid
            ));
            continue;
        }
        if !valid_user(name) {
            users_notes.push(format!(
                "user {name:?} skipped: not a name the policy can use"
            ));
            continue;
        }
        if !entry.home.starts_with('/') || MailPath::parse(&entry.home).is_err() {
            users_notes.push(format!(
                "user {name}: home {:?} is not an absolute normalised path; .forward not read",
                entry.home
            ));
            continue;
        }
        let path = Path::new(&entry.home).join(".forward");
        let bytes = match open_checked(&path, entry.uid, false) {
            Ok(None) => continue,
            Ok(Some(bytes)) => bytes,
            Err(OpenError::Unsafe(why)) => {
                users_notes.push(format!("user {name}: ~/.forward skipped: {why}"));
                continue;
            }
            Err(OpenError::Io(e)) => {
                users_notes.push(format!("user {name}: ~/.forward skipped: {e}"));
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            users_notes.push(format!("user {name}: ~/.forward skipped: not UTF-8"));
            continue;
        };
        let entries = match forward::parse(&text) {
            Ok(entries) => entries,
            Err(e) => {
                users_notes.push(format!("user {name}: ~/.forward skipped: {e}"));
                continue;
            }
        };
        let who = Who {
            uid: entry.uid,
            home: Some(&entry.home),
        };
        for e in entries {
            let origin = forward_origin(name, e.line);
            match &e.target {
                Target::Command(c) => collected.command(c, origin),
                Target::File(f) => collected.file(f, name, origin, &defaults, who),
                Target::Include(f) => collected.notes.push(format!(
                    ":include:{f} from {origin}: not read; list its commands and files by hand"
                )),
                Target::Address(_) | Target::Local(_) => {}
            }
        }
    }

    let text = render(args, &collected, &users_notes);
    policy::parse_system(&text, "generated").map_err(GenerateError::Invalid)?;
    Ok(text)
}

fn render(args: &GenerateArgs, collected: &Collected, users_notes: &[String]) -> String {
    let mut out = String::new();
    comment(
        &mut out,
        "Destination policy for cursus-lda, written by `cursus-lda policy generate`",
    );
    comment(
        &mut out,
        &format!(
            "from {} and the .forward files of the users in {} with uid >= {}.",
            args.aliases.display(),
            args.passwd.display(),
            args.min_uid
        ),
    );
    comment(
        &mut out,
        "Review it: each rule says which alias or .forward line asked for it.",
    );
    let _ = writeln!(out, "\nmin_uid = {}\n", args.min_uid);
    out.push_str(policy::DEFAULTS);
    let mut used = BTreeSet::from(["home-maildir".to_string(), "var-mail".to_string()]);

    if !collected.commands.is_empty() {
        out.push_str("\n# Commands named by aliases and .forward files (exact programs).\n");
    }
    for rule in &collected.commands {
        let base = rule.program.components().last().unwrap_or("command");
        let name = unique_name(&format!("command-{base}"), &mut used);
        out.push('\n');
        for origin in &rule.origins {
            comment(&mut out, &format!("from {origin}"));
        }
        let _ = writeln!(out, "[[allow]]");
        let _ = writeln!(out, "name = {}", toml_string(&name));
        let _ = writeln!(out, "kind = \"command\"");
        let _ = writeln!(out, "path = {}", toml_string(rule.program.as_str()));
        if rule.arguments {
            let _ = writeln!(out, "arguments = true");
        }
    }

    if !collected.files.is_empty() {
        out.push_str("\n# Files named by aliases and .forward files.\n");
    }
    for rule in &collected.files {
        let base = rule.path.rsplit('/').next().unwrap_or("file");
        let name = unique_name(&format!("file-{base}"), &mut used);
        out.push('\n');
        for origin in &rule.origins {
            comment(&mut out, &format!("from {origin}"));
        }
        if rule.users.contains(DEFAULT_PRIVS) {
            comment(
                &mut out,
                "Postfix local(8) writes alias file deliveries as the owner of the aliases",
            );
            comment(
                &mut out,
                &format!(
                    "database, or as default_privs ({DEFAULT_PRIVS}) when root owns it; \
                     change the user if yours differs."
                ),
            );
        }
        let users: Vec<String> = rule.users.iter().map(|u| toml_string(u)).collect();
        let _ = writeln!(out, "[[allow]]");
        let _ = writeln!(out, "name = {}", toml_string(&name));
        let kind = if rule.maildir { "maildir" } else { "mbox" };
        let _ = writeln!(out, "kind = \"{kind}\"");
        let _ = writeln!(out, "path = {}", toml_string(&rule.path));
        let _ = writeln!(out, "users = [{}]", users.join(", "));
    }

    if !collected.notes.is_empty() {
        out.push_str("\n# Not made into rules:\n");
        for note in &collected.notes {
            comment(&mut out, note);
        }
    }
    if !users_notes.is_empty() {
        out.push_str("\n# Users:\n");
        for note in users_notes {
            comment(&mut out, note);
        }
    }
    out
}

/// Runs `policy generate`: writes the policy to `--output` (refusing to replace an existing
/// file without `--force`) or to `out`; returns the exit status.
pub fn run(args: &GenerateArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let text = match generate(args) {
        Ok(text) => text,
        Err(e @ GenerateError::Aliases { .. }) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
        Err(e) => {
            let _ = writeln!(err, "cursus-lda: {e}");
            return 2;
        }
    };
    let Some(path) = &args.output else {
        return match out.write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "cursus-lda: writing the policy: {e}");
                2
            }
        };
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    match options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
    {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = writeln!(
                err,
                "cursus-lda: {} exists; give --force to replace it",
                path.display()
            );
            1
        }
        Err(e) => {
            let _ = writeln!(err, "cursus-lda: {}: cannot write: {e}", path.display());
            2
        }
    }
}

#[cfg(test)]
mod tests;
