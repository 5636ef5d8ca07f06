//! cursus-deliver: the MDA binary. Process hygiene, argument parsing, one delivery, one
//! `X.Y.Z text` line on failure, the sysexits code.
//!
//! Trusts nothing it inherits: descriptors above 2 are closed, the umask is set to 077 and
//! SIGXFSZ is ignored before anything else runs.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cursus_deliver::{Args, Env, run};
use cursus_mail::{OutcomeKind, codes};

fn main() -> ExitCode {
    let _ = cursus_privsep::close_inherited_descriptors();
    cursus_privsep::private_umask();
    let _ = cursus_privsep::ignore_sigxfsz();
    let _ = cursus_privsep::ignore_sigpipe();

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
            eprintln!("{} usage: {first}", codes::SYSTEM_STATUS);
            return ExitCode::from(64);
        }
    };
    let env: Env = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let outcome = run(&args, &env, &mut std::io::stdin().lock());
    if outcome.kind != OutcomeKind::Delivered {
        let _ = writeln!(std::io::stderr().lock(), "{outcome}");
    } else if args.verbose {
        let _ = writeln!(std::io::stdout().lock(), "{outcome}");
    }
    ExitCode::from(outcome.exit_code() as u8)
}
