//! The command line of cursus-deliver: dovecot-lda's letters, plus explicit destinations.
//!
//! Trusts nothing: every argument may carry text from a remote SMTP client (Postfix pipe(8)
//! macros, OpenSMTPD format specifiers). Values are kept as strings here and validated where
//! they are used; none reaches a shell. The same definition generates `--help` and the
//! cursus-deliver(1) man page.

use std::path::PathBuf;

use clap::Parser;

/// Deliver one message, read from standard input, to one local mailbox.
///
/// cursus-deliver is a local delivery agent (MDA). Postfix, OpenSMTPD, Exim or sendmail run
/// it as the recipient, one process per message, with the message on standard input and the
/// envelope in arguments or environment (SENDER, RECIPIENT, ORIGINAL_RECIPIENT, EXTENSION,
/// LOCAL_PART_SUFFIX, USER, LOGNAME, HOME). With no configuration it writes to ~/Maildir.
///
/// Two programs are installed side by side: cursus-deliver, the one MTAs run, makes the
/// common delivery itself (an ordinary user's ~/Maildir or --maildir, with USER and HOME
/// set and no configuration file, Sieve script or maildirsize) and runs
/// cursus-deliver-full from its own directory for everything else, with the same
/// arguments, environment and message; both give the same result. Neither may be
/// installed set-user-ID or set-group-ID.
///
/// Exit status: 0 delivered; 75 temporary failure (the MTA retries); 67 unknown user;
/// 77 refused (permissions, policy, over quota); 65 bad message or mail loop; 64 usage
/// error; 78 configuration error. Every failure prints one line `X.Y.Z text` that the MTA
/// puts in its log and bounce.
#[derive(Debug, Parser)]
#[command(name = "cursus-deliver", version, about, long_about)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Destination user. Started as root, cursus-deliver becomes this user before it reads
    /// anything else; otherwise it names the mailbox owner (and the %u, %n, %d in a
    /// configured destination, for virtual users).
    #[arg(short = 'd', value_name = "USER")]
    pub user: Option<String>,

    /// Envelope sender. "" or "<>" is the null sender (bounces); so is MAILER-DAEMON, as
    /// Postfix pipe(8) passes it. Default: $SENDER, else the leading "From " line.
    #[arg(short = 'f', value_name = "SENDER")]
    pub sender: Option<String>,

    /// Original envelope recipient, as given in RCPT TO. Default: $ORIGINAL_RECIPIENT, else
    /// the final recipient.
    #[arg(short = 'a', value_name = "ADDRESS")]
    pub original_recipient: Option<String>,

    /// Final envelope recipient, used in Delivered-To and for loop detection. Default:
    /// $RECIPIENT, else the original recipient, else USER@HOSTNAME.
    #[arg(short = 'r', value_name = "ADDRESS")]
    pub final_recipient: Option<String>,

    /// Maildir++ folder to deliver into ("Lists.rust" is stored in .Lists.rust). An empty
    /// value is ignored, so `-m ${extension}` works; a name that is not valid, or a folder
    /// that cannot be created, falls back to INBOX.
    #[arg(short = 'm', value_name = "FOLDER")]
    pub folder: Option<String>,

    /// Read the message from FILE instead of standard input.
    #[arg(short = 'p', value_name = "FILE")]
    pub path: Option<PathBuf>,

    /// Report failures on standard error with an exit status (the default and only mode;
    /// accepted for dovecot-lda compatibility).
    #[arg(short = 'e')]
    pub stderr_errors: bool,

    /// Accepted for dovecot-lda compatibility; the environment is read, never passed on.
    #[arg(short = 'k')]
    pub keep_environment: bool,

    /// System configuration file. Default: /etc/cursus/deliver.toml when it exists.
    #[arg(short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Override one configuration setting, e.g. -o quota_full=temporary. May be repeated;
    /// applied after both configuration files.
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,

    /// Print the outcome line on success too (e.g. "2.0.0 delivered to PATH").
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Deliver into this Maildir instead of the configured destination.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["mbox", "mh"])]
    pub maildir: Option<PathBuf>,

    /// Deliver into this mbox file instead of the configured destination.
    #[arg(long, value_name = "FILE", conflicts_with = "mh")]
    pub mbox: Option<PathBuf>,

    /// Deliver into this MH folder instead of the configured destination.
    #[arg(long, value_name = "DIR")]
    pub mh: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Configuration (TOML, optional): the system file /etc/cursus/deliver.toml, then the user's
~/.config/cursus/deliver.toml, then -o overrides. Keys:
  destination = \"maildir:~/Maildir\"   also \"mbox:/var/mail/%u\", \"mh:~/Mail/inbox\";
                                      ~ is the home directory, %u the user, %n and %d its
                                      local part and domain, %h the home, %% a percent sign
  folder_autocreate = true            create a missing -m folder
  extension_folders = false           deliver user+ext mail into folder ext when it exists
  recipient_delimiter = \"+\"           characters that start an address extension
  quota = \"1G\"                        storage limit, kept in maildirsize (K, M, G suffixes)
  quota_messages = 0                  message limit (0: none)
  quota_full = \"permanent\"            or \"temporary\": over quota bounces (5.2.2, exit 77)
                                      or defers (4.2.2, exit 75)
  max_message_size = \"0\"              larger messages are refused with 5.2.3 (0: no limit)
  lock_timeout = 60                   seconds to wait for an mbox or MH lock
  mbox_dotlock = true                 take <mbox>.lock as well as the fcntl lock
  fsync = \"full\"                      \"full\": fsync each message and its directory entry;
                                      \"file\": the message only (Postfix local, procmail);
                                      \"none\" (true and false mean full and none)
  allow_root = false                  system file only: permit delivery as uid 0
  sieve = \"~/.dovecot.sieve\"         the user's active Sieve script (\"~/path\" or an
                                      absolute path; a symlink into ~/sieve/ is followed);
                                      \"\" turns Sieve off. Errors go to SCRIPT.log and the
                                      message is kept in INBOX
  sieve_before = []                   system file only: administrator scripts run before
  sieve_after = []                    and after the user's, e.g. [\"/etc/cursus/spam.sieve\"]
  sieve_global_dir = \"\"               system file only: where include :global finds
                                      NAME.sieve (include :personal reads ~/sieve/NAME.sieve)
  sieve_reject = \"exit\"               reject prints 5.7.1 and exits 77 so the MTA bounces;
                                      \"mdn\": mails an RFC 5429 rejection and exits 0
  sendmail = \"/usr/sbin/sendmail\"     not in the user's file: the program (and arguments)
                                      redirect, vacation and notify mail is handed to, run
                                      as PROGRAM -i -f SENDER -- RECIPIENT..., never by a shell

Examples:
  Postfix main.cf:  mailbox_command = /usr/lib/cursus/cursus-deliver -f \"$SENDER\" -a \"$ORIGINAL_RECIPIENT\" -m \"$EXTENSION\"
  OpenSMTPD:        action \"local\" mda \"/usr/lib/cursus/cursus-deliver\"
  .forward:         \"|/usr/lib/cursus/cursus-deliver\"

Sieve: redirect, vacation and notify are sent after the message is stored, so a failure
never loses it; when nothing was stored (redirect without :copy) a sendmail failure is a
temporary failure (exit 75). Vacation and duplicate memory: ~/.local/share/cursus/sieve.sqlite.

See docs/mta-integration.md for Postfix pipe(8), Exim and sendmail.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn dovecot_lda_style_lines_parse() {
        let a = Args::try_parse_from([
            "cursus-deliver",
            "-f",
            "",
            "-d",
            "joe",
            "-a",
            "joe+x@h",
            "-m",
            "",
            "-e",
        ])
        .expect("parses");
        assert_eq!(a.sender.as_deref(), Some(""));
        assert_eq!(a.folder.as_deref(), Some(""));
        assert!(a.stderr_errors);
        // OpenSMTPD's quoting pitfall gives "-f -a x": refused, never read as sender "-a".
        assert!(Args::try_parse_from(["cursus-deliver", "-f", "-a", "x"]).is_err());
        assert!(Args::try_parse_from(["cursus-deliver", "--maildir", "a", "--mbox", "b"]).is_err());
    }
}
