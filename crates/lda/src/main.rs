//! cursus-lda: the binary, a thin `main` over `cli::run`: the root service (`serve`), requests
//! by hand (`request`) and the policy tools (`policy check`, `explain`, `generate`).
//!
//! Trusts its arguments (it is run by root or the administrator); the credential changes and
//! every check live in the library (`service.rs`, `store.rs`, cursus-privsep). Fails with
//! the exit status each subcommand documents in cursus-lda(8) (EXIT STATUS).

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
