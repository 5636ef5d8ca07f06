//! cursus-deliver: the front MTAs run, one process per message. Delivers the common case
//! (an ordinary user, a Maildir, no configuration, Sieve script or quota) itself and hands
//! everything else to cursus-deliver-full beside it; cursus-front says which is which and
//! why.
//!
//! Two builds of the same code (cursus-front's `run`):
//! - hosted (the default, what `cargo build` and the tests make): the standard library
//!   starts the process and gives argv and environment;
//! - bare (`--cfg cursus_bare`, made by scripts/build-release for x86_64 Linux): no C library
//!   and no standard library at all; `bare.rs` is the entry point, the allocator and the
//!   panic handler. glibc's start-up alone costs about 0.3 ms where `cpuid` traps to a
//!   hypervisor, more than the rest of a delivery but its fsyncs.
//!
//! Trusts nothing it inherits: descriptors above 2 are closed, the umask is set to 077,
//! SIGXFSZ and SIGPIPE are ignored, and a set-user-ID or set-group-ID installation is
//! refused, before anything else runs (the full program repeats all of this).

#![cfg_attr(cursus_bare, no_std, no_main)]

#[cfg(cursus_bare)]
mod bare;

#[cfg(not(cursus_bare))]
fn main() -> std::process::ExitCode {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::process::CommandExt;

    let argv: Vec<Vec<u8>> = std::env::args_os().map(OsStringExt::into_vec).collect();
    let env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .collect();
    let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    let env_refs: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
    let process = cursus_front::Process {
        argv: &argv_refs,
        env: &env_refs,
    };
    // The environment and standard input are inherited as they are.
    let hand_over = |path: &cursus_front::sys::CPath| {
        let path = std::ffi::OsStr::from_bytes(path.as_bytes());
        let mut cmd = std::process::Command::new(path);
        if let Some((first, rest)) = argv_refs.split_first() {
            cmd.arg0(std::ffi::OsStr::from_bytes(first))
                .args(rest.iter().map(|a| std::ffi::OsStr::from_bytes(a)));
        }
        let e = cmd.exec();
        // exec(2) failures always carry an errno.
        cursus_front::sys::Errno(e.raw_os_error().unwrap_or_default())
    };
    let code = cursus_front::run(&process, &hand_over);
    std::process::ExitCode::from(code as u8)
}
