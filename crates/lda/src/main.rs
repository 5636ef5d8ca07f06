//! cursus-lda: the binary. For now the administrator's policy tools (`policy check`,
//! `policy explain`); the root service will live behind another subcommand.
//!
//! Trusts its arguments (it is run by the administrator); changes no credentials and writes
//! no mailbox. Fails with exit status 1 (errors, refused) or 2 (could not answer).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use cursus_lda::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let code = cursus_lda::cli::run(
        &args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
