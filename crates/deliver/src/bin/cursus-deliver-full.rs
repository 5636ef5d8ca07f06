//! cursus-deliver-full: the whole MDA. Process hygiene, argument parsing, one delivery, one
//! `X.Y.Z text` line on failure, the sysexits code. The `cursus-deliver` front executes it
//! for every request that is not the common case (see cursus-front); it can also be run
//! directly.
//!
//! Trusts nothing it inherits: descriptors above 2 are closed, the umask is set to 077 and
//! SIGXFSZ is ignored before anything else runs; a set-user-ID or set-group-ID
//! installation is refused before the arguments are read.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use cursus_deliver::delivery::{installation_refusal, process_env, report};
use cursus_deliver::{Args, run};
use cursus_mail::codes;

fn main() -> ExitCode {
    cursus_privsep::clean_start();

    if let Some(refusal) = installation_refusal() {
        cursus_deliver::input::drain(&mut std::io::stdin().lock());
        report(&refusal, false);
        return ExitCode::from(refusal.exit_code() as u8);
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            cursus_deliver::input::drain(&mut std::io::stdin().lock());
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            let line = format!("{} usage: {first}\n", codes::SYSTEM_STATUS);
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            return ExitCode::from(64);
        }
    };
    let env = process_env();
    let outcome = run(&args, &env, &mut std::io::stdin().lock());
    report(&outcome, args.verbose);
    ExitCode::from(outcome.exit_code() as u8)
}
