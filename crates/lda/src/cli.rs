//! The command line of cursus-lda: the root service (`serve`), requests sent to it by hand
//! (`request`) and the administrator's policy tools (`policy check`, `explain`,
//! `generate`), defined once here so `--help` and the cursus-lda(8) man pages come from the
//! same text.
//!
//! Trusts the administrator who runs it; reads the named policy files and looks the user up
//! in the user database (nix `User::from_name`). Fails with a message on stderr and the exit
//! status each subcommand documents (see [`AFTER_HELP`]).
//!
//! Attacks stopped: none of its own (the service's are in `service.rs`); `explain` runs
//! exactly the checks the service will, so an administrator sees the same decision a request
//! would get.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::destination::Destination;
use crate::policy::{self, Policy, Request};

/// Where the system policy lives when `--policy` is not given.
pub const SYSTEM_POLICY: &str = "/etc/cursus/lda-policy.toml";

/// The DESCRIPTION of cursus-lda(8) and of `cursus-lda --help`.
const LONG_ABOUT: &str = "\
cursus-lda is the local delivery agent of Cursus, and the only Cursus program that keeps \
root. The MTA (cursusd) asks it to \"deliver this message to this destination as this \
user\"; cursus-lda checks every request against its own destination policy \
(cursus-lda-policy(5)), never the MTA's configuration, becomes the user, and only then \
opens anything the user controls.

Service. `cursus-lda serve` runs as root, single-threaded and synchronous, with no \
network, DNS, TLS, SQL or LDAP code. Each connection is served by a forked root process; \
each request by a child forked from it that becomes the user (supplementary groups, gid, \
uid, then proves that no way back to root and no capability remains), refines the policy \
with the user's own file, reaches the mailbox without following a symbolic link, checks \
owner, link count and file type after opening, and writes through the same mailbox code \
as cursus-deliver. Commands run only when the policy lists them, directly (never through \
a shell), with a cleared environment and a time limit (--command-timeout). A child that \
overruns is killed and the answer is temporary.

Socket and peer. With --socket PATH the service listens on a unix socket of mode 0600 \
owned by the first --peer, and each connection's SO_PEERCRED uid must be root or a \
--peer; any other is refused and logged. With --connection-fd FD it serves socket-pair \
ends inherited from its parent (how cursusd, started as root, starts it) and exits when \
the last one closes.

Protocol. Versioned, length-prefixed binary frames of at most 64 KiB; the message \
travels as a read-only file descriptor (SCM_RIGHTS), never as bytes in a frame. \
Requests: deliver (user, destination KIND:PATH, envelope, options), filter (run the \
user's Sieve script as the user; the answer is its decisions), read-forward (the user's \
.forward read as the user, answered as data), ping, and deliver-many (up to 16 messages \
for one user and one mailbox, never a command, one descriptor each: one child writes \
them from a thread each, so their syncs overlap and the mailbox directory is synced \
once; one answer per message). Answers: delivered, temporary or \
permanent, an enhanced status code and one line of text (for a command, its status \
followed by the first 4 KB of its output, escaped). A malformed, oversize, truncated or \
out-of-order frame is answered with an error and the connection is closed; nothing is \
written. `cursus-lda request` sends any request by hand.

Policy. The file is looked at before every request (one stat) and reloaded when it \
changed, on open connections too; while it does not load, every request is answered \
temporary (4.3.5). `cursus-lda policy check`, `explain` and `generate` work on policy \
files without the service.";

/// The sections after OPTIONS and SUBCOMMANDS in cursus-lda(8) and `--help`.
pub const AFTER_HELP: &str = "\
FILES
    /etc/cursus/lda-policy.toml       the system policy (--policy): owned by root, not
                                      writable by group or others; missing: built-in
                                      defaults (~/Maildir and below, /var/mail/USER)
    ~/.config/cursus/lda-policy.toml  a user's refinement; ignored and logged unless a
                                      regular file (not a symlink) the user owns, not
                                      group- or world-writable, at most 64 KiB
    /run/cursus/lda.sock              the default socket (--socket)

The policy file (TOML) lists allowed destinations, one [[allow]] table each:

    min_uid = 1000                 # users below need a rule naming them

    [[allow]]
    name = \"home-maildir\"
    kind = \"maildir\"               # maildir, mbox, mh or command
    path = \"~/Maildir\"             # ~ is the user's home; ${user} the user name
    subtree = true                 # the path and everything below it

    [[allow]]
    name = \"virtual\"
    kind = \"maildir\"
    path = \"/srv/vmail\"
    subtree = true
    users = [\"vmail\"]              # only as these users (also lifts min_uid for them)

    [[allow]]
    name = \"procmail\"
    kind = \"command\"
    path = \"/usr/bin/procmail\"
    arguments = true               # plain arguments allowed (never a shell)

uid 0 is refused unless a rule names the user. A user's refinement file may
`remove = [\"rule\", ...]` and add [[allow]] mailboxes under ~/ only.

LOGGING
    One line per event on standard error (journald or the supervisor keeps it), each
    starting `cursus-lda[PID]: `; a delivery's line reads
    deliver user=USER to=ADDRESS destination=KIND:PATH status=sent|deferred|bounced
    dsn=X.Y.Z delay=SECONDS (TEXT)
    Refused peers, frame errors, policy reloads and ignored refinement files have a line
    each too.

EXIT STATUS
    serve      runs until killed; 0 when the last inherited connection closed; 78 when
               it cannot start (a policy that does not load, a socket it cannot bind, a
               bad --peer or --connection-fd)
    request    0 delivered or answered, 75 temporary, 69 permanent, 1 an error answer
               (refused, malformed), 2 no answer (no service, unreadable message file)
    policy     0 ok or allowed, 1 errors or refused, 2 could not answer

SEE ALSO
    cursus-lda-policy(5), cursus-lda-serve(8), cursus-lda-request(8),
    cursus-lda-policy(8), cursusd(8), cursus-deliver(1)";

/// cursus-lda: the local delivery agent that checks every delivery against its policy.
#[derive(Debug, Parser)]
#[command(name = "cursus-lda", version, about, long_about = LONG_ABOUT)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the destination policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the root service: listen on a unix socket, check every request, deliver as the user.
    Serve(ServeArgs),
    /// Send one request to a running service and print its answer.
    Request(RequestArgs),
    /// Measure deliveries per second through a running service (bench/lda-bench.sh).
    #[command(hide = true)]
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_name = "PATH", default_value = crate::service::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Deliveries in all.
    #[arg(long, default_value_t = 2000)]
    pub count: usize,
    #[arg(long)]
    pub user: String,
    /// KIND:PATH.
    #[arg(long)]
    pub destination: String,
    #[arg(long, value_name = "FILE")]
    pub message: PathBuf,
    /// Messages per request: 1 sends `deliver` requests, 2 to 16 `deliver-many` (what
    /// cursusd sends when deliveries for one mailbox wait for each other).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub batch: u16,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The unix socket to listen on (mode 0600, owned by the first --peer).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve the socket-pair end inherited as descriptor FD (repeatable).
    #[arg(long = "connection-fd", value_name = "FD")]
    pub connection_fds: Vec<i32>,
    /// The user (name or uid) allowed to connect besides root (repeatable; usually `cursus`).
    #[arg(long = "peer", value_name = "USER")]
    pub peers: Vec<String>,
    /// The system policy file. When it does not exist, the built-in defaults apply (each
    /// user's ~/Maildir and everything below it, /var/mail/USER, uids from 1000, no
    /// commands) and a line says so; a file that exists must load.
    #[arg(long, value_name = "FILE", default_value = SYSTEM_POLICY)]
    pub policy: PathBuf,
    /// Seconds a command destination may run before it is killed (the delivery is deferred).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub command_timeout: u64,
    /// Connections served at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections: usize,
}

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The service's socket.
    #[arg(long, value_name = "PATH", default_value = crate::service::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub request: RequestKind,
}

#[derive(Debug, Subcommand)]
pub enum RequestKind {
    /// Is the service there?
    Ping,
    /// Deliver the message in FILE to DESTINATION as USER.
    Deliver {
        /// The local user the delivery runs as.
        #[arg(long)]
        user: String,
        /// KIND:PATH (maildir:/home/joe/Maildir, command:/usr/bin/procmail -a x).
        #[arg(long)]
        destination: String,
        /// The envelope sender (empty for the null sender).
        #[arg(long, default_value = "")]
        sender: String,
        /// The final recipient address.
        #[arg(long)]
        recipient: String,
        /// The original recipient (default: the recipient).
        #[arg(long)]
        original_recipient: Option<String>,
        /// The address extension.
        #[arg(long)]
        extension: Option<String>,
        /// Do not force the message to disk before answering.
        #[arg(long)]
        no_fsync: bool,
        /// Create missing Maildir++ and MH folders.
        #[arg(long)]
        create_folders: bool,
        /// Add a Return-Path header.
        #[arg(long)]
        return_path: bool,
        /// The message file (opened read-only and passed as a descriptor).
        #[arg(long, value_name = "FILE")]
        message: PathBuf,
    },
    /// Run USER's Sieve filter and print its decisions.
    Filter {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        sender: String,
        #[arg(long)]
        recipient: String,
        /// Without a message: stage rcpt (envelope only).
        #[arg(long, value_name = "FILE")]
        message: Option<PathBuf>,
    },
    /// Read USER's .forward as USER and print its entries.
    ReadForward {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a policy file; print `FILE: ok` or every error with file:line:col.
    Check {
        /// The system policy file.
        file: PathBuf,
        /// Check FILE as USER's refinement of this system policy instead.
        #[arg(long, value_name = "SYSTEM", requires = "user")]
        refines: Option<PathBuf>,
        /// The user whose refinement FILE is (with --refines).
        #[arg(long)]
        user: Option<String>,
    },
    /// Say which rule allows a delivery to DESTINATION as USER, or why it is refused.
    Explain {
        /// The system policy file.
        #[arg(long, value_name = "FILE", default_value = SYSTEM_POLICY)]
        policy: PathBuf,
        /// A refinement file for USER (its owner and mode are not checked here).
        #[arg(long, value_name = "FILE")]
        refinement: Option<PathBuf>,
        /// Use this uid instead of the user database's.
        #[arg(long)]
        uid: Option<u32>,
        /// Use this home directory instead of the user database's.
        #[arg(long)]
        home: Option<String>,
        /// The local user the delivery runs as.
        user: String,
        /// KIND:PATH, KIND one of maildir, mbox, mh, command (`command:/usr/bin/procmail -a x`).
        destination: String,
    },
    /// Write a policy from the aliases file and the users' .forward files.
    Generate(crate::generate::GenerateArgs),
}

/// Runs the parsed command, writing to `out` and `err`; returns the exit status.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match &args.command {
        Command::Serve(serve) => crate::service::serve_command(serve, err),
        Command::Request(request) => crate::client::request_command(request, out, err),
        Command::Bench(bench) => crate::client::bench_command(bench, out, err),
        Command::Policy(PolicyCommand::Check {
            file,
            refines,
            user,
        }) => check(file, refines.as_deref(), user.as_deref(), out, err),
        Command::Policy(PolicyCommand::Generate(generate)) => {
            crate::generate::run(generate, out, err)
        }
        Command::Policy(PolicyCommand::Explain {
            policy,
            refinement,
            uid,
            home,
            user,
            destination,
        }) => {
            let what = Explain {
                policy,
                refinement: refinement.as_deref(),
                uid: *uid,
                home: home.as_deref(),
                user,
                destination,
            };
            match explain(&what, out) {
                Ok(code) => code,
                Err(message) => {
                    let _ = writeln!(err, "cursus-lda: {message}");
                    2
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn load_system(path: &Path) -> Result<Result<Policy, policy::PolicyErrors>, String> {
    let text = read(path)?;
    Ok(policy::parse_system(&text, &path.display().to_string()))
}

fn check(
    file: &Path,
    refines: Option<&Path>,
    user: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let result = (|| {
        let Some(system) = refines else {
            return load_system(file).map(|r| r.map(|_| ()));
        };
        let system = match load_system(system)? {
            Ok(p) => p,
            Err(errors) => return Ok(Err(errors)),
        };
        let text = read(file)?;
        let user = user.unwrap_or_default();
        Ok(policy::parse_user(&system, user, &text, &file.display().to_string()).map(|_| ()))
    })();
    match result {
        Ok(Ok(())) => {
            let _ = writeln!(out, "{}: ok", file.display());
            0
        }
        Ok(Err(errors)) => {
            let _ = writeln!(err, "{errors}");
            1
        }
        Err(message) => {
            let _ = writeln!(err, "cursus-lda: {message}");
            2
        }
    }
}

struct Explain<'a> {
    policy: &'a Path,
    refinement: Option<&'a Path>,
    uid: Option<u32>,
    home: Option<&'a str>,
    user: &'a str,
    destination: &'a str,
}

fn explain(what: &Explain<'_>, out: &mut dyn Write) -> Result<u8, String> {
    let destination: Destination = what
        .destination
        .parse()
        .map_err(|e| format!("{:?}: {e}", what.destination))?;
    let mut policy = load_system(what.policy)?.map_err(|e| e.to_string())?;
    if let Some(file) = what.refinement {
        let text = read(file)?;
        policy = policy::parse_user(&policy, what.user, &text, &file.display().to_string())
            .map_err(|e| e.to_string())?;
    }
    let (uid, home) = match (what.uid, what.home) {
        (Some(uid), Some(home)) => (uid, home.to_string()),
        (uid, home) => {
            let entry = nix::unistd::User::from_name(what.user)
                .map_err(|e| format!("looking up user {:?}: {e}", what.user))?
                .ok_or_else(|| {
                    format!(
                        "no such user {:?} (give --uid and --home to ask anyway)",
                        what.user
                    )
                })?;
            let home = match home {
                Some(h) => h.to_string(),
                None => entry
                    .dir
                    .to_str()
                    .ok_or_else(|| format!("the home of {:?} is not UTF-8", what.user))?
                    .to_string(),
            };
            (uid.unwrap_or(entry.uid.as_raw()), home)
        }
    };
    let decision = policy::check(
        &policy,
        &Request {
            user: what.user,
            uid,
            home: &home,
            destination: &destination,
        },
    );
    let _ = writeln!(out, "user {} (uid {uid}, home {home})", what.user);
    let _ = writeln!(out, "destination {destination}");
    let _ = writeln!(out, "{decision}");
    Ok(if decision.is_allowed() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
    }
}
