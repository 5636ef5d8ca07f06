//! One delivery from start to outcome: configuration, identity, destination, the message,
//! trace headers and loop check, Sieve filtering when the user or the administrator has
//! scripts (`filter.rs`, `disposition.rs`), then the mailbox write.
//!
//! The front (cursus-front, the `cursus-deliver` binary) delivers the common case with no
//! standard library. It shares with this program, so that both store the same bytes and
//! answer with the same line and exit code: the envelope and the trace fields with the loop
//! check (cursus-front's `envelope`), the splitting of the input, the Maildir names and the
//! errno table (cursus-mail); `tests/front.rs` runs the two side by side.
//!
//! Trusts the system configuration file and the user database; everything from argv, the
//! environment and stdin is hostile. Never returns an error: every path ends in an
//! [`Outcome`] whose status, text and exit code the MTA understands (mda-interface §2:
//! temporary is always 75). The message is read to EOF on every path.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use cursus_front::envelope::{Envelope, EnvelopeArgs};
use cursus_front::envelope::{empty_message, setuid_refusal};
use cursus_mail::address::{extension, split_address};
use cursus_mail::{ExitCode, Outcome, codes};
use cursus_mailbox::errno::describe;
use cursus_mailbox::{
    FolderName, MailboxError, MaildirOptions, MboxOptions, Message, MhOptions, QuotaLimits, Stored,
    deliver_maildir, deliver_mbox, deliver_mh,
};

use crate::cli::Args;
use crate::config::{self, ConfigError, Origin, QuotaFull, Settings};
use crate::destination::{self, Destination, TemplateError, TemplateValues};
use crate::disposition::{Delivery, filter_and_deliver};
use crate::filter;
use crate::input::{self, ReadMessage};
use crate::user::{self, Recipient, UserError};

/// The process environment as the MTA gave it (values lossily decoded).
pub type Env = HashMap<String, String>;

/// Runs one delivery. `stdin` is read to EOF whatever happens (unless `-p` names a file).
pub fn run(args: &Args, env: &Env, stdin: &mut dyn Read) -> Outcome {
    let mut consumed = false;
    let outcome = run_steps(args, env, stdin, &mut consumed);
    if !consumed && args.path.is_none() {
        input::drain(stdin);
    }
    outcome
}

/// The environment of a process as [`Env`]: each value lossily decoded, and of two entries
/// with the same name the first, as getenv(3) (and so the front) reads it.
pub fn process_env() -> Env {
    let mut env = Env::new();
    for (k, v) in std::env::vars_os() {
        env.entry(k.to_string_lossy().into_owned())
            .or_insert_with(|| v.to_string_lossy().into_owned());
    }
    env
}

/// Refuses a set-user-ID or set-group-ID installation: the first check of both binaries,
/// before the arguments are read.
pub fn installation_refusal() -> Option<Outcome> {
    user::check_not_setuid().err().map(user_failure)
}

fn run_steps(args: &Args, env: &Env, stdin: &mut dyn Read, consumed: &mut bool) -> Outcome {
    let getenv = |k: &str| env.get(k).cloned();
    let mut settings = Settings::default();

    // 0. Nothing is read (not even the system file, which -c could name) with privileges
    // an installation bit gave us.
    if let Some(refusal) = installation_refusal() {
        return refusal;
    }

    // 1. The system file, read with the privileges we started with (it is root's).
    let system_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::SYSTEM_CONFIG));
    match config::load(&system_path, user::euid().as_raw()) {
        Ok(Some(file)) => {
            if let Err(e) =
                settings.apply(&file, Origin::System, &system_path.display().to_string())
            {
                return config_failure(&e);
            }
        }
        Ok(None) if args.config.is_some() => {
            return config_failure(&ConfigError::new(
                &system_path.display().to_string(),
                None,
                "no such file",
            ));
        }
        Ok(None) => {}
        Err(e) => return config_failure(&e),
    }

    // 2. Identity: drop root before reading anything the user controls.
    let recipient = if user::euid().is_root() && !settings.allow_root {
        user::become_recipient(args.user.as_deref(), false)
    } else {
        user::resolve_recipient(args.user.as_deref(), &getenv, settings.allow_root)
    };
    let recipient = match recipient {
        Ok(r) => r,
        Err(e) => return user_failure(e),
    };

    // 3. The user's own file (only when the home is theirs), then -o overrides.
    if let (true, Some(home)) = (recipient.is_self, recipient.home.as_deref()) {
        let path = config::user_config_path(home);
        match config::load(&path, user::euid().as_raw()) {
            Ok(Some(file)) => {
                if let Err(e) = settings.apply(&file, Origin::User, &path.display().to_string()) {
                    return config_failure(&e);
                }
            }
            Ok(None) => {}
            Err(e) => return config_failure(&e),
        }
    }
    if !args.overrides.is_empty() {
        match config::parse_overrides(&args.overrides) {
            Ok(file) => {
                if let Err(e) = settings.apply(&file, Origin::Override, "-o") {
                    return config_failure(&e);
                }
            }
            Err(e) => return config_failure(&e),
        }
    }

    // 4. The destination.
    let destination = match choose_destination(args, &settings, &recipient) {
        Ok(d) => d,
        Err(outcome) => return outcome,
    };

    // 5. The message, read to EOF.
    let spill_dir = spill_dir(&getenv);
    let read = match &args.path {
        Some(path) => match File::open(path) {
            Ok(mut f) => read_input(&mut f, &spill_dir),
            Err(e) => {
                return Outcome::permanent(
                    codes::SYSTEM_STATUS,
                    ExitCode::Usage,
                    format!("cannot open message file {}: {e}", path.display()),
                );
            }
        },
        None => {
            *consumed = true;
            read_input(stdin, &spill_dir)
        }
    };
    let message = match read.and_then(|m| check_size(m, &settings)) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };

    // 6. Envelope, trace headers and loop check.
    let envelope = Envelope::gather(
        &envelope_args(args),
        &getenv,
        message.from_line_sender.as_deref(),
        &recipient.name,
        &hostname,
    );
    let sender = envelope.sender.address().map(str::to_string);
    let mut stored = match add_trace(message, &envelope) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let (folder, autocreate, folder_note) = match &destination {
        Destination::Maildir(root) => choose_folder(args, env, &settings, &envelope, root),
        _ => (None, false, None),
    };

    // 7. Sieve, between the loop check and the store (only as the recipient: another
    // user's home and scripts are not ours to read).
    let home = recipient.home.as_deref().filter(|_| recipient.is_self);
    let scripts = filter::find(&settings, home);
    if !scripts.is_empty() {
        let host_name = hostname();
        let delivery = Delivery {
            destination: &destination,
            default_folder: folder,
            default_autocreate: autocreate,
            settings: &settings,
            envelope: &envelope,
            home,
            host_name: &host_name,
        };
        return filter_and_deliver(&delivery, &scripts, &mut stored);
    }

    // 8. The write.
    let request = StoreRequest {
        folder,
        autocreate,
        flags: String::new(),
    };
    let written = write_mailbox(
        &destination,
        &stored,
        sender.as_deref(),
        &settings,
        &request,
    );
    stored_outcome(written, folder_note, &settings)
}

/// Where a large message spills while it is read: `$TMPDIR` when absolute, else /tmp.
pub fn spill_dir(getenv: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    getenv("TMPDIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Reads the message to EOF; an empty message is refused (5.6.0, exit 65).
pub fn read_input(input: &mut dyn Read, spill_dir: &Path) -> Result<ReadMessage, Outcome> {
    let message = input::read_message(input, spill_dir).map_err(|e| {
        Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("reading the message: {}", describe(&e)),
        )
    })?;
    if message.is_empty() {
        return Err(empty_message());
    }
    Ok(message)
}

/// Refuses a message over `max_message_size` (5.2.3, exit 77).
pub fn check_size(message: ReadMessage, settings: &Settings) -> Result<ReadMessage, Outcome> {
    if let Some(limit) = settings.max_message_size.filter(|l| message.size() > *l) {
        return Err(Outcome::permanent(
            codes::MESSAGE_TOO_LARGE,
            ExitCode::NoPerm,
            format!(
                "message size {} exceeds the limit of {limit} bytes",
                message.size()
            ),
        ));
    }
    Ok(message)
}

/// Puts Return-Path and Delivered-To in front of the message (unless the MTA already did),
/// after the Delivered-To loop check (5.4.6, exit 65).
pub fn add_trace(message: ReadMessage, envelope: &Envelope) -> Result<Message, Outcome> {
    let prefix = envelope.trace(&message.header, message.starts_with_body)?;
    Ok(Message {
        prefix,
        header: message.header,
        body: message.body,
    })
}

/// The outcome of the write: "delivered to PATH" with the writer's note (or else the
/// folder note) in parentheses, or the failure.
pub fn stored_outcome(
    written: Result<Stored, MailboxError>,
    folder_note: Option<String>,
    settings: &Settings,
) -> Outcome {
    match written {
        Ok(s) => {
            let mut text = format!("delivered to {}", s.path.display());
            if let Some(note) = s.note.or(folder_note) {
                text.push_str(&format!(" ({note})"));
            }
            Outcome::delivered(text)
        }
        Err(e) => mailbox_failure(&e, settings),
    }
}

/// Prints the outcome as the MTA reads it, with one write(2) so that concurrent output
/// never splits the line: a failure on standard error; a delivery on standard output only
/// when `verbose` (-v).
pub fn report(outcome: &Outcome, verbose: bool) {
    let line = format!("{outcome}\n");
    if outcome.kind != cursus_mail::OutcomeKind::Delivered {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    } else if verbose {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

/// What the command line says about the envelope.
pub fn envelope_args(args: &Args) -> EnvelopeArgs<'_> {
    EnvelopeArgs {
        sender: args.sender.as_deref(),
        original_recipient: args.original_recipient.as_deref(),
        final_recipient: args.final_recipient.as_deref(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn choose_destination(
    args: &Args,
    settings: &Settings,
    recipient: &Recipient,
) -> Result<Destination, Outcome> {
    if let Some(p) = &args.maildir {
        return Ok(Destination::Maildir(p.clone()));
    }
    if let Some(p) = &args.mbox {
        return Ok(Destination::Mbox(p.clone()));
    }
    if let Some(p) = &args.mh {
        return Ok(Destination::Mh(p.clone()));
    }
    let template = settings.destination.as_str();
    let home_based = destination::uses_home(template);
    if home_based && recipient.unknown && !destination::uses_user(template) {
        return Err(Outcome::permanent(
            codes::BAD_MAILBOX,
            ExitCode::NoUser,
            format!("unknown user {}", recipient.name),
        ));
    }
    if home_based && !recipient.is_self {
        // Running as a shared account (vmail) for another system user: the files would
        // belong to the wrong uid. A configuration problem, so retry rather than bounce.
        return Err(Outcome::temporary(
            codes::CONFIG_ERROR,
            format!(
                "running as uid {} cannot deliver into the home of {}; configure a destination without ~ (see cursus-deliver(1))",
                user::euid(),
                recipient.name
            ),
        ));
    }
    let values = TemplateValues {
        user: &recipient.name,
        home: recipient.home.as_deref(),
    };
    destination::expand(template, &values).map_err(|e| match e {
        TemplateError::Syntax(text) => config_failure(&ConfigError::new("destination", None, text)),
        TemplateError::UnsafeUser(u) => Outcome::permanent(
            codes::BAD_MAILBOX,
            ExitCode::NoUser,
            format!("user name {u:?} cannot name a mailbox"),
        ),
        TemplateError::NoHome => Outcome::temporary(
            codes::CONFIG_ERROR,
            format!("no home directory known for {}", recipient.name),
        ),
    })
}

/// The folder this delivery asks for: `-m`, or with `extension_folders` the address
/// extension when that folder already exists. `None` is INBOX; the note says why a
/// requested folder was not used.
fn choose_folder(
    args: &Args,
    env: &Env,
    settings: &Settings,
    envelope: &Envelope,
    root: &Path,
) -> (Option<FolderName>, bool, Option<String>) {
    if let Some(name) = args.folder.as_deref().filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("INBOX") {
            return (None, false, None);
        }
        return match FolderName::parse(name) {
            Ok(f) => (Some(f), settings.folder_autocreate, None),
            Err(e) => (
                None,
                false,
                Some(format!(
                    "folder {name:?} not usable ({e}); delivered to INBOX"
                )),
            ),
        };
    }
    if !settings.extension_folders {
        return (None, false, None);
    }
    let delimiters = settings.recipient_delimiter.as_str();
    let from_env = env
        .get("EXTENSION")
        .filter(|e| !e.is_empty())
        .cloned()
        .or_else(|| {
            env.get("LOCAL_PART_SUFFIX")
                .and_then(|s| s.strip_prefix(|c| delimiters.contains(c)))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        });
    let ext = from_env.or_else(|| {
        let (local, _) = split_address(&envelope.original_recipient);
        extension(local, delimiters)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
    });
    match ext.as_deref().map(FolderName::parse) {
        Some(Ok(f)) if root.join(f.dir_name()).is_dir() => (Some(f), false, None),
        _ => (None, false, None),
    }
}

/// Which mailbox of the destination a copy goes to, and how.
#[derive(Debug, Clone, Default)]
pub struct StoreRequest {
    /// A Maildir++ folder; `None` is INBOX (for mbox and MH, always the mailbox itself).
    pub folder: Option<FolderName>,
    /// Create the folder when missing.
    pub autocreate: bool,
    /// Maildir info flags ("FS"): the copy goes to cur/ with `:2,FLAGS`.
    pub flags: String,
}

/// How a copy is written into a Maildir under these settings.
pub fn maildir_options(settings: &Settings, request: &StoreRequest) -> MaildirOptions {
    let quota = (settings.quota_bytes.is_some() || settings.quota_messages.is_some()).then_some(
        QuotaLimits {
            bytes: settings.quota_bytes,
            messages: settings.quota_messages,
        },
    );
    MaildirOptions {
        create: true,
        folder: request.folder.clone(),
        autocreate_folder: request.autocreate,
        quota,
        flags: request.flags.clone(),
        fsync: settings.fsync.file(),
        fsync_directory: settings.fsync.directory(),
    }
}

/// Writes one copy of the message.
pub fn write_mailbox(
    destination: &Destination,
    message: &Message,
    sender: Option<&str>,
    settings: &Settings,
    request: &StoreRequest,
) -> Result<Stored, MailboxError> {
    match destination {
        Destination::Maildir(root) => {
            deliver_maildir(root, message, &maildir_options(settings, request))
        }
        Destination::Mbox(path) => {
            let opts = MboxOptions {
                create: true,
                lock_timeout: settings.lock_timeout,
                dotlock: settings.mbox_dotlock,
                stale_dotlock_after: std::time::Duration::from_secs(300),
                fsync: settings.fsync.file(),
            };
            deliver_mbox(path, sender, message, &opts)
        }
        Destination::Mh(path) => {
            let opts = MhOptions {
                create: true,
                fsync: settings.fsync.file(),
                lock_timeout: settings.lock_timeout,
            };
            deliver_mh(path, message, &opts)
        }
    }
}

/// The outcome of a failed mailbox write (over quota defers when so configured).
pub fn mailbox_failure(e: &MailboxError, settings: &Settings) -> Outcome {
    if e.is_over_quota() && settings.quota_full == QuotaFull::Temporary {
        Outcome::temporary(codes::MAILBOX_FULL, e.to_string())
    } else {
        e.outcome()
    }
}

fn config_failure(e: &ConfigError) -> Outcome {
    Outcome::permanent(
        codes::CONFIG_ERROR,
        ExitCode::Config,
        format!("configuration error: {e}"),
    )
}

fn user_failure(e: UserError) -> Outcome {
    match e {
        UserError::Unknown(name) => Outcome::permanent(
            codes::BAD_MAILBOX,
            ExitCode::NoUser,
            format!("unknown user {name}"),
        ),
        UserError::RootRefused => Outcome::permanent(
            codes::SECURITY,
            ExitCode::NoPerm,
            "refusing to deliver as root (set allow_root in the system configuration to permit it)",
        ),
        UserError::RootNeedsUser => Outcome::permanent(
            codes::SYSTEM_STATUS,
            ExitCode::Usage,
            "started as root without -d USER",
        ),
        UserError::SetUid => setuid_refusal(),
        UserError::Lookup(text) => {
            Outcome::temporary(codes::SYSTEM_STATUS, format!("user lookup failed: {text}"))
        }
        UserError::Drop(text) => Outcome::temporary(
            codes::SYSTEM_STATUS,
            format!("cannot become the recipient: {text}"),
        ),
    }
}
