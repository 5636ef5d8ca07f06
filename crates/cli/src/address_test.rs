//! `cursus address test`: route one address with the configured routers against the real
//! system and print the decisions, like `exim -bt`.
//!
//! Trusts the configuration only after [`RoutingConfig::parse`] has validated it; trusts
//! nothing in the address (the router treats it as untrusted). Reads what routing reads
//! (user database, .forward files, aliases, tables) as the calling user and delivers
//! nothing. Fails as an output: configuration errors on stderr with status 1.

use cursus_mail::Sender;
use cursus_route::router::{Mode, Router, World};
use cursus_route::{RoutingConfig, Summary};

/// What the subcommand prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressOutput {
    pub stdout: String,
    pub stderr: String,
    /// 0 routable, 2 undeliverable, 75 temporary, 1 configuration errors.
    pub code: u8,
}

/// Routes `address`; `config` is the file's text and name, `None` for the defaults.
pub fn run(
    address: &str,
    config: Option<(&str, &str)>,
    sender: Option<&str>,
    verify: bool,
) -> AddressOutput {
    let config = match config {
        None => RoutingConfig::single_user(),
        Some((text, source)) => match RoutingConfig::parse(text, source) {
            Ok(config) => config,
            Err(errors) => {
                let stderr = errors.iter().map(|e| format!("{e}\n")).collect();
                return AddressOutput {
                    stdout: String::new(),
                    stderr,
                    code: 1,
                };
            }
        },
    };
    let sender = Sender::parse(sender.unwrap_or(""));
    let source = config.source.clone();
    let router = Router::new(config, World::system());
    let mode = if verify { Mode::Verify } else { Mode::Deliver };
    let routed = router.route_in(address, &sender, mode);
    let mut stdout = format!(
        "routing {} from {} with {source}{}\n",
        routed.recipient,
        sender.return_path(),
        if verify { " (verify)" } else { "" }
    );
    stdout.push_str(&routed.render());
    let code = match routed.summary() {
        Summary::Routable => 0,
        Summary::Undeliverable => 2,
        Summary::Temporary => 75,
    };
    AddressOutput {
        stdout,
        stderr: String::new(),
        code,
    }
}
