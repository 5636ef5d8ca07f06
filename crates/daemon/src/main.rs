//! cursusd: the binary. Parses arguments, loads the configuration, and runs the daemon.
//!
//! Trusts its arguments (it is started by the administrator or the user). Exit status: 0
//! after a clean shutdown, 78 for a configuration error, 71 and 73 for system problems.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

/// cursusd: the Cursus mail transfer agent.
///
/// Started by an ordinary user, cursusd runs in single-user mode on embedded defaults: SMTP
/// on 127.0.0.1:2525, everything in one data directory (default ~/.local/share/cursus), mail
/// for any address at localhost delivered into mail/<local part>/Maildir there. Started as
/// root, it reads /etc/cursus/cursus.toml, binds its ports, starts cursus-lda and becomes
/// the `cursus` user before serving.
#[derive(Debug, Parser)]
#[command(name = "cursusd", version)]
pub struct Args {
    /// The configuration file (default: /etc/cursus/cursus.toml when started as root, none
    /// otherwise).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory (queue, single-user mailboxes, sockets).
    #[arg(short = 'd', long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Check the configuration and the routing tables, print `FILE: ok`, and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let start = cursusd::daemon::Start {
        config: args.config,
        data_dir: args.data_dir,
        check: args.check_config,
    };
    match cursusd::daemon::run(&start) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(cursusd::daemon::Fatal(message, code)) => {
            eprintln!("cursusd: {message}");
            std::process::ExitCode::from(code)
        }
    }
}
