//! cursus: the binary. Parses the command line, runs one subcommand, prints its text and
//! exits with its status (0 success, 1 the check or test failed, 2 usage; `address test`
//! has its own: 2 undeliverable, 75 temporary).
//!
//! Trusts nothing it is given; reads only the files named on the command line and writes
//! only to standard output and standard error.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use cursus_cli::cli::{
    AddressCommand, AddressTestArgs, BenchArgs, Command, ConfigCommand, SieveCommand, TestArgs,
};
use cursus_cli::sieve_test::TrialStatus;
use cursus_cli::{Cli, address_test, bench, check, sieve_test};
use cursus_sieve::Config;

fn read(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("cursus: {}: cannot read: {e}", path.display());
        ExitCode::FAILURE
    })
}

fn print(out: &str, err: &str) {
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    let _ = std::io::stderr().lock().write_all(err.as_bytes());
}

fn sieve_test(args: &TestArgs) -> Result<ExitCode, ExitCode> {
    let script = read(&args.script)?;
    let message = read(&args.message)?;
    let name = args.script.display().to_string();
    let out = sieve_test::run(&name, &script, &message, &args.envelope, &Config::default());
    print(&out.stdout, &out.stderr);
    Ok(match out.status {
        TrialStatus::Success => ExitCode::SUCCESS,
        TrialStatus::CompileFailed | TrialStatus::RuntimeFailed => ExitCode::FAILURE,
    })
}

fn sieve_bench(args: &BenchArgs) -> Result<ExitCode, ExitCode> {
    let script = read(&args.script)?;
    let message = read(&args.message)?;
    match bench::measure(
        &script,
        &message,
        &args.envelope,
        args.compiles,
        args.iterations,
    ) {
        Ok(result) => {
            print(&result.render(), "");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("cursus: {}: {e}", args.script.display());
            Err(ExitCode::FAILURE)
        }
    }
}

fn address_test(args: &AddressTestArgs) -> Result<ExitCode, ExitCode> {
    let text = match &args.config {
        Some(path) => {
            let bytes = read(path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                eprintln!("cursus: {}: not UTF-8", path.display());
                ExitCode::FAILURE
            })?;
            Some((text, path.display().to_string()))
        }
        None => None,
    };
    let out = address_test::run(
        &args.address,
        text.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
        args.sender.as_deref(),
        args.verify,
    );
    print(&out.stdout, &out.stderr);
    Ok(ExitCode::from(out.code))
}

fn config_check(file: &Path) -> ExitCode {
    let start = cursusd::daemon::Start {
        config: Some(file.to_path_buf()),
        data_dir: None,
        check: true,
    };
    let root = nix::unistd::geteuid().is_root();
    let (config, routing, _retry) = match cursusd::daemon::load(&start, root) {
        Ok(pair) => pair,
        Err(cursusd::daemon::Fatal(message, _)) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let router = cursus_route::Router::new(routing, cursus_route::World::system());
    let mut problems = router.check();
    if let Err(e) = cursusd::bounce::Bounces::load(&config.bounce) {
        problems.push(e);
    }
    for p in &problems {
        eprintln!("{}: {p}", file.display());
    }
    if problems.is_empty() {
        println!(
            "{}: ok (data {}, {} SMTP and {} LMTP listeners)",
            file.display(),
            config.data_dir.display(),
            config.smtp_listen.len(),
            config.lmtp_listen.len()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    // The sendmail personality has sendmail's own option syntax (`-oi`, `-fADDR`, `-bp`),
    // which clap cannot express: it is chosen by name before clap sees anything.
    let argv: Vec<String> = std::env::args().collect();
    let called = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if matches!(called.as_str(), "sendmail" | "mailq" | "newaliases") {
        return ExitCode::from(cursus_cli::sendmail::run(&called, &argv[1..]));
    }
    if argv.get(1).is_some_and(|a| a == "sendmail") {
        return ExitCode::from(cursus_cli::sendmail::run("sendmail", &argv[2..]));
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Sieve(SieveCommand::Check(args)) => {
            let (out, ok) = check::check_files(&args.files, &Config::default());
            print(&out, "");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Sieve(SieveCommand::Test(args)) => sieve_test(args),
        Command::Sieve(SieveCommand::Bench(args)) => sieve_bench(args),
        Command::Address(AddressCommand::Test(args)) => address_test(args),
        Command::Config(ConfigCommand::Check { file }) => Ok(config_check(file)),
        Command::Queue(args) => Ok(ExitCode::from(cursus_cli::queue_control::run(args))),
        Command::Retry(cursus_cli::cli::RetryCommand::Test {
            address,
            error,
            config,
            sender,
            hints,
        }) => {
            let out = cursus_cli::retry_test::run(
                address,
                error,
                config.as_deref(),
                sender,
                hints.as_deref(),
            );
            print(&out.0, &out.1);
            Ok(ExitCode::from(out.2))
        }
        // Handled before clap (sendmail's own option syntax); here only for --help.
        Command::Sendmail { args } => {
            Ok(ExitCode::from(cursus_cli::sendmail::run("sendmail", args)))
        }
    };
    result.unwrap_or_else(|code| code)
}
