//! cursusd: the binary. Parses arguments, loads the configuration, and runs the daemon.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
