//! cursus-deliver: the front MTAs run, one process per message. Delivers the common case
//! (an ordinary user, a Maildir, no configuration, Sieve script or quota) itself and hands
//! everything else to cursus-deliver-full beside it; `front.rs` says which is which and why.
//!
//! Trusts nothing it inherits: descriptors above 2 are closed, the umask is set to 077,
//! SIGXFSZ and SIGPIPE are ignored, and a set-user-ID or set-group-ID installation is
//! refused, before anything else runs (the full program repeats all of this). Links none of
//! clap, toml, the Sieve interpreter, SQLite or the user database, so it can be built as a
//! static PIE (scripts/build-release).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use cursus_deliver::config::Settings;
use cursus_deliver::delivery::{installation_refusal, report};
use cursus_deliver::front;
use cursus_mail::Outcome;

fn main() -> ExitCode {
    cursus_privsep::clean_start();

    if let Some(refusal) = installation_refusal() {
        return unread(&refusal);
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let settings = Settings::default();
    let getenv = |name: &str| std::env::var_os(name);
    let root = nix::unistd::geteuid().is_root();
    let plan = front::parse_args(argv.get(1..).unwrap_or_default())
        .and_then(|args| front::plan(args, &settings, root, &getenv, &front::present));
    let Some(plan) = plan else {
        // Returns only when cursus-deliver-full could not be executed.
        return unread(&front::hand_over(&argv));
    };
    let lossy = |name: &str| front::lossy_env(&getenv, name);
    let outcome = front::deliver(&plan, &settings, &lossy, &mut std::io::stdin().lock());
    report(&outcome, plan.verbose);
    ExitCode::from(outcome.exit_code() as u8)
}

/// Ends without a delivery: the message is read to EOF (the MTA expects it consumed), the
/// line printed.
fn unread(outcome: &Outcome) -> ExitCode {
    cursus_deliver::input::drain(&mut std::io::stdin().lock());
    report(outcome, false);
    ExitCode::from(outcome.exit_code() as u8)
}
