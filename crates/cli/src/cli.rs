//! The command line of `cursus`: one subcommand per job, grouped by subsystem
//! (`cursus sieve check`, `cursus sieve test`, `cursus address test`, ...).
//!
//! Trusts nothing: every argument is a path or text the user typed. Values stay strings and
//! paths here and are parsed where they are used. The same definitions generate `--help` and
//! the cursus(1) man pages, so the two cannot drift.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The Cursus administration and user tool.
///
/// cursus checks and tries out the pieces of a Cursus mail system without touching a
/// mailbox or the mail queue. Each subsystem has its own group of subcommands.
#[derive(Debug, Parser)]
#[command(name = "cursus", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subsystems.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check and try out Sieve (RFC 5228) mail filtering scripts.
    #[command(subcommand)]
    Sieve(SieveCommand),

    /// Show how Cursus routes mail addresses.
    #[command(subcommand)]
    Address(AddressCommand),

    /// Check cursusd's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Show and manage cursusd's mail queue.
    Queue(QueueArgs),

    /// Show which retry rule applies to a temporary failure and when the next attempts are.
    #[command(subcommand)]
    Retry(RetryCommand),

    /// Submit a message to cursusd, sendmail-compatible (also as `sendmail`, `mailq`,
    /// `newaliases` through links to this program).
    ///
    /// Reads the message on standard input, adds Date, Message-ID and From when missing
    /// (RFC 6409), and submits it over cursusd's local socket, where the daemon learns the
    /// user from the socket (no set-user-ID program). Options as sendmail: -t (recipients
    /// from To, Cc, Bcc; Bcc removed), -i/-oi (a lone dot does not end the message), -f
    /// ADDR, -F NAME, -N NOTIFY, -R RET, -V ENVID, -bs (SMTP on stdin/stdout), -bp (list the
    /// queue, as mailq), -bi (check /etc/aliases, as newaliases), -q (retry the queue now),
    /// other -o options ignored. The socket: $CURSUS_SUBMISSION_SOCKET, else
    /// $CURSUS_DATA_DIR/submit.sock, else /run/cursus/submit.sock or
    /// /var/spool/cursus/submit.sock when one exists, else ~/.local/share/cursus/submit.sock.
    ///
    /// Exit status: 0 accepted, 64 usage, 65 bad input, 69 unavailable, 75 temporary
    /// (cursusd not running: the message was not sent), 77 refused.
    Sendmail {
        /// sendmail options and recipients.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

/// `cursus queue ...`
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The daemon's data directory. Default: $CURSUS_DATA_DIR, else /var/spool/cursus when
    /// it exists, else ~/.local/share/cursus.
    #[arg(short = 'd', long = "data-dir", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// What to do with the queue.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// `cursus queue ...`: listing reads the spool directly; every change goes through the
/// running daemon's control socket (`DATA_DIR/control.sock`), which admits only root and
/// the daemon's own user.
///
/// Exit status: 0 done; 1 the daemon refused (unknown id, ...); 69 the daemon or the queue
/// cannot be reached.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages and the state of each recipient, as mailq does (held messages
    /// are marked `!`).
    List,
    /// Hold messages: they stay queued and are not tried until released.
    Hold {
        /// Queue ids, as `cursus queue list` prints them.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
    /// Release held messages and try them at once.
    Release {
        /// Queue ids.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
    /// Delete messages from the queue without delivering them and without a bounce.
    Delete {
        /// Queue ids.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
    /// Try messages now, deferred ones included (every message that is not held when no id
    /// is given), as `sendmail -q` does.
    Flush {
        /// Queue ids (default: all).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
}

/// `cursus retry ...`
#[derive(Debug, Subcommand)]
pub enum RetryCommand {
    /// Print the retry rule that applies to ADDRESS failing with ERROR, and every attempt
    /// time it gives until the address bounces.
    ///
    /// Rules are the `[[retry]]` tables of the configuration, tried in order; the first
    /// whose pattern (a domain, or `local@domain`), error classes and senders match
    /// decides, else the built-in default. Times are counted from the message's arrival
    /// (its first attempt).
    ///
    /// ERROR is one of: refused, timeout, dns, greeting, mail, rcpt, data, tls, quota,
    /// home, other.
    ///
    /// With the daemon's hints database (--hints, or hints.db in the data directory when
    /// it exists; read only), the hints that would change the decision follow: an address
    /// that bounced on a timeout (bounced at once), a domain without MX whose connections
    /// are refused (bounced early), when the mailbox was last read (quota), hosts greeted
    /// with HELO.
    ///
    /// Exit status: 0; 1 when the configuration has errors or the hints file cannot be
    /// read; 64 for an unknown error class.
    #[command(after_long_help = RETRY_TEST_EXAMPLES)]
    Test {
        /// The address (or a bare domain).
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// The error class.
        #[arg(value_name = "ERROR")]
        error: String,
        /// The configuration file (default: /etc/cursus/cursus.toml when it exists, else
        /// the built-in rules).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The envelope sender, for rules with `senders` ("" or "<>": the null sender).
        #[arg(short = 'f', long = "sender", value_name = "ADDR", default_value = "")]
        sender: String,
        /// The hints database to consult (default: hints.db in the configuration's data
        /// directory, when it exists); the hints that would change the decision are
        /// printed after the rule.
        #[arg(long = "hints", value_name = "FILE")]
        hints: Option<PathBuf>,
    },
}

const RETRY_TEST_EXAMPLES: &str = "Examples:
  cursus retry test joe@example.org rcpt
  cursus retry test -c cursus.toml example.net refused -f list@example.org
  cursus retry test --hints /var/spool/cursus/hints.db joe@example.org timeout";

/// `cursus config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Read cursus.toml as cursusd would and report every error with FILE:LINE:COLUMN and a
    /// suggestion for unknown keys; then open the routing tables and files it names.
    ///
    /// Exit status: 0 when the configuration is usable; 1 when it has errors.
    Check {
        /// The configuration file (default: /etc/cursus/cursus.toml).
        #[arg(value_name = "FILE", default_value = "/etc/cursus/cursus.toml")]
        file: PathBuf,
    },
}

/// `cursus address ...`
#[derive(Debug, Subcommand)]
pub enum AddressCommand {
    /// Route an address through the configured routers and print every decision.
    ///
    /// Like `exim -bt`: prints each address of the redirect tree with every router tried
    /// and what it decided (skipped, with the condition that did not hold; declined;
    /// accepted, with the alias, .forward or user it found; failed), then the final
    /// deliveries (destination, user, transport, router and the redirect chain) and the
    /// failures with their enhanced status codes. Nothing is delivered. The routers read
    /// the real system: the user database through NSS, users' .forward files (as far as
    /// the caller may read them), the aliases file and tables the configuration names.
    ///
    /// Exit status: 0 when every branch is routable; 2 when an address is undeliverable;
    /// 75 when routing would be deferred (a temporary failure, such as an unreadable
    /// file); 1 when the configuration cannot be read or has errors (printed as
    /// FILE:LINE:COLUMN: text).
    #[command(after_long_help = ADDRESS_TEST_EXAMPLES)]
    Test(AddressTestArgs),
}

/// Arguments of `cursus address test`.
#[derive(Debug, Args)]
pub struct AddressTestArgs {
    /// The recipient address to route; without a domain it gets the qualify domain.
    #[arg(value_name = "ADDR")]
    pub address: String,

    /// The routing configuration (TOML). Default: the built-in single-user defaults (an
    /// aliases router on /etc/aliases when it exists, local users of `localhost`
    /// delivered to maildir:~/Maildir).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The envelope sender, for routers with `senders` conditions. "", "<>" and
    /// MAILER-DAEMON are the null sender (the default).
    #[arg(short = 'f', long = "sender", value_name = "ADDR")]
    pub sender: Option<String>,

    /// Use only the routers marked `verify = true`, as cursusd does at RCPT time.
    #[arg(long = "verify")]
    pub verify: bool,
}

/// `cursus sieve ...`
#[derive(Debug, Subcommand)]
pub enum SieveCommand {
    /// Compile Sieve scripts and report every error with its line and column.
    ///
    /// Each error is printed as `FILE:LINE:COLUMN: error: text` (warnings as
    /// `FILE:LINE:COLUMN: warning: text`), the form editors and compilers use; a script that
    /// compiles prints `FILE: ok`.
    ///
    /// Exit status: 0 when every script compiles; 1 when any has an error or cannot be read.
    #[command(after_long_help = CHECK_EXAMPLES)]
    Check(CheckArgs),

    /// Run a Sieve script against a message and print the actions it would take.
    ///
    /// Nothing is delivered, sent or remembered: the script is compiled, evaluated against
    /// MESSAGE with the given envelope, and the resulting actions are printed in the layout
    /// of Pigeonhole's sieve-test(1) ("Performed actions:", then "Implicit keep:"). The
    /// mailbox extension's `mailboxexists` sees INBOX and the folders named with
    /// --mailbox-exists; the date and currentdate tests see the current time in UTC.
    ///
    /// Exit status: 0 when the script ran; 1 when it does not compile or fails at run time
    /// (the message would then be kept in INBOX, which the output shows).
    #[command(after_long_help = TEST_EXAMPLES)]
    Test(TestArgs),

    /// Measure compile time and evaluations per second of a script (for bench/).
    #[command(hide = true)]
    Bench(BenchArgs),
}

/// Arguments of `cursus sieve check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Sieve scripts to check.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// The envelope and the mail store `cursus sieve test` evaluates against.
#[derive(Debug, Args, Clone)]
pub struct EnvelopeArgs {
    /// Envelope sender (MAIL FROM), as `envelope "from"` sees it. "", "<>" and
    /// MAILER-DAEMON are the null sender. Default, as sieve-test(1) does: the address in
    /// the message's Return-Path, Sender or From field, else sender@example.com.
    #[arg(short = 'f', long = "from", value_name = "ADDR")]
    pub from: Option<String>,

    /// Envelope recipient (RCPT TO), as `envelope "to"` sees it (sieve-test's -a). Default,
    /// as sieve-test(1) does: the first address in the message's Envelope-To or To field,
    /// else recipient@example.com.
    #[arg(long = "to", value_name = "ADDR")]
    pub to: Option<String>,

    /// Original envelope recipient (the ORCPT parameter of RCPT TO), when it differs from
    /// --to. Default: none.
    #[arg(long = "orig-to", value_name = "ADDR")]
    pub orig_to: Option<String>,

    /// A mailbox that exists in the mail store (repeat for more). INBOX always exists.
    #[arg(long = "mailbox-exists", value_name = "NAME")]
    pub mailbox_exists: Vec<String>,

    /// The mailbox `keep` and the implicit keep store into.
    #[arg(
        short = 'm',
        long = "default-mailbox",
        value_name = "NAME",
        default_value = "INBOX"
    )]
    pub default_mailbox: String,
}

impl Default for EnvelopeArgs {
    /// No envelope flags: defaults from the message, keep into INBOX.
    fn default() -> Self {
        EnvelopeArgs {
            from: None,
            to: None,
            orig_to: None,
            mailbox_exists: Vec::new(),
            default_mailbox: "INBOX".into(),
        }
    }
}

/// Arguments of `cursus sieve test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The Sieve script to run.
    #[arg(value_name = "SCRIPT")]
    pub script: PathBuf,

    /// The message (RFC 5322, LF or CRLF line ends).
    #[arg(value_name = "MESSAGE")]
    pub message: PathBuf,

    /// The envelope and mail store.
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
}

/// Arguments of the hidden `cursus sieve bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The Sieve script to measure.
    #[arg(value_name = "SCRIPT")]
    pub script: PathBuf,

    /// The message to evaluate it against.
    #[arg(value_name = "MESSAGE")]
    pub message: PathBuf,

    /// Number of timed evaluations.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: u64,

    /// Number of timed compiles.
    #[arg(long, default_value_t = 2_000)]
    pub compiles: u64,

    /// The envelope and mail store.
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
}

const ADDRESS_TEST_EXAMPLES: &str = "\
Examples:
  cursus address test postmaster@localhost
  cursus address test --config /etc/cursus/cursus.toml --sender joe@example.org \\
      list@example.org";

const CHECK_EXAMPLES: &str = "\
Examples:
  cursus sieve check ~/.dovecot.sieve
  cursus sieve check ~/sieve/*.sieve";

const TEST_EXAMPLES: &str = "\
Examples:
  cursus sieve test ~/.dovecot.sieve message.eml
  cursus sieve test --from list@example.org --to me@example.net \\
      --mailbox-exists Lists.rust filter.sieve message.eml";
