//! The sendmail personality: `cursus sendmail`, and the `sendmail`, `mailq` and
//! `newaliases` names (argv[0]). Reads a message on standard input, completes it for local
//! submission (RFC 6409 §8: Date, Message-ID, From), and submits it to cursusd over its unix
//! socket, where the daemon learns who we are from SO_PEERCRED; no set-user-ID or
//! set-group-ID program exists.
//!
//! Trusts nothing on its command line or input beyond the caller's own rights; the daemon
//! checks the submission again. Fails with sendmail's conventions: exit 0 accepted, 64 usage,
//! 65 bad input, 69 the daemon is not reachable, 75 temporary refusal, 77 permanent refusal,
//! with one line on stderr.
//!
//! Attacks stopped: a recipient or sender that starts with `-` or holds CR/LF is refused
//! before it reaches the SMTP conversation (command injection into the session); a header
//! line without a colon ends the header so no text is taken for a header it is not.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use cursus_mail::header::{fields, is_field_start};
use cursus_mail::submission::{Completion, missing_fields};
use cursus_sieve::address::{Address, parse_list};

/// sysexits the front uses.
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const UNAVAILABLE: u8 = 69;
    pub const TEMPFAIL: u8 = 75;
    pub const NOPERM: u8 = 77;
}

/// What the command line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    pub recipients: Vec<String>,
    /// -t: recipients from To, Cc and Bcc (Bcc removed).
    pub from_headers: bool,
    /// -i / -oi: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    pub sender: Option<String>,
    pub full_name: Option<String>,
    /// -N: DSN NOTIFY for every recipient.
    pub notify: Option<String>,
    /// -R: DSN RET.
    pub ret: Option<String>,
    /// -V: DSN ENVID.
    pub envid: Option<String>,
    pub verbose: bool,
}

/// The personality's job.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Deliver,
    /// -bs: speak SMTP on stdin/stdout (relayed to the daemon).
    Smtp,
    /// -bp / mailq.
    ListQueue,
    /// -bi / newaliases.
    RebuildAliases,
    /// -q: run the queue now.
    RunQueue,
}

/// Parses sendmail's options (the subset MTAs and scripts use; the rest of `-o` is ignored
/// like Postfix does). `name` is how we were called.
pub fn parse_args(name: &str, args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    match name {
        "mailq" => o.mode = Mode::ListQueue,
        "newaliases" => o.mode = Mode::RebuildAliases,
        _ => {}
    }
    let mut i = 0;
    let value = |i: &mut usize, inline: &str, flag: &str| -> Result<String, String> {
        if !inline.is_empty() {
            return Ok(inline.to_string());
        }
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option {flag} needs a value"))
    };
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            o.recipients.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            o.recipients.push(a.to_string());
            i += 1;
            continue;
        }
        match a {
            "-t" => o.from_headers = true,
            "-i" | "-oi" => o.ignore_dots = true,
            "-v" => o.verbose = true,
            "-bm" => o.mode = Mode::Deliver,
            "-bs" => o.mode = Mode::Smtp,
            "-bp" => o.mode = Mode::ListQueue,
            "-bi" | "-I" => o.mode = Mode::RebuildAliases,
            "-q" => o.mode = Mode::RunQueue,
            _ if a.starts_with("-f") || a.starts_with("-r") => {
                o.sender = Some(value(&mut i, &a[2..], "-f")?);
            }
            _ if a.starts_with("-F") => o.full_name = Some(value(&mut i, &a[2..], "-F")?),
            _ if a.starts_with("-N") => o.notify = Some(value(&mut i, &a[2..], "-N")?),
            _ if a.starts_with("-R") => o.ret = Some(value(&mut i, &a[2..], "-R")?),
            _ if a.starts_with("-V") => o.envid = Some(value(&mut i, &a[2..], "-V")?),
            _ if a.starts_with("-q") => o.mode = Mode::RunQueue,
            // -oXXX (old-style options), -B type, -C file, -L tag, -X log: accepted, ignored
            // (as Postfix does for the ones it does not implement).
            _ if a.starts_with("-o") => {}
            "-B" | "-C" | "-L" | "-X" | "-h" => {
                i += 1;
            }
            _ if a.starts_with("-B") || a.starts_with("-C") || a.starts_with("-L") => {}
            _ => return Err(format!("unknown option {a}")),
        }
        i += 1;
    }
    if let Some(s) = &o.sender
        && !safe_address(s, true)
    {
        return Err(format!("unusable sender address {s:?}"));
    }
    for r in &o.recipients {
        if !safe_address(r, false) {
            return Err(format!("unusable recipient address {r:?}"));
        }
    }
    Ok(o)
}

/// Whether an address can go into MAIL FROM / RCPT TO as is.
///
/// Attack stopped: `-oQ/tmp` style option injection if the address is ever passed on as an
/// argument, and CR/LF or `>` ending the SMTP command early to smuggle another command.
pub fn safe_address(address: &str, null_ok: bool) -> bool {
    if address.is_empty() || address == "<>" {
        return null_ok;
    }
    !address.starts_with('-')
        && address.len() <= 512
        && !address
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>' || c == ' ')
}

/// Reads the message from `input`: stops at EOF, or at a line holding a single dot unless
/// `ignore_dots`. Line ends become LF.
pub fn read_message(input: &mut dyn Read, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(input);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if !ignore_dots && body == b"." {
            break;
        }
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    Ok(out)
}

/// The identity of the submitting user.
#[derive(Debug, Clone)]
pub struct Submitter {
    pub login: String,
    pub full_name: Option<String>,
    pub hostname: String,
}

/// Splits a message into its header section (with the blank line) and body.
fn split_header(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut pos = 0;
    let mut in_header = true;
    while in_header && pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |e| pos + e + 1);
        let line = &message[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.is_empty() {
            pos = end;
            in_header = false;
        } else if is_field_start(text) || (pos > 0 && (text[0] == b' ' || text[0] == b'\t')) {
            pos = end;
        } else {
            in_header = false;
        }
    }
    (message[..pos].to_vec(), message[pos..].to_vec())
}

/// The completed message (CRLF line ends) and the recipients taken from its header when
/// `-t` asked for it. Adds Date, Message-ID and From when missing (RFC 6409 §8), removes
/// Bcc when recipients come from the header.
pub fn complete(
    message: &[u8],
    options: &Options,
    who: &Submitter,
    now: &jiff::ZonedDateTime,
    unique: &str,
) -> (Vec<u8>, Vec<String>) {
    let (header, body) = split_header(message);
    let mut recipients = Vec::new();
    if options.from_headers {
        for f in fields(&header) {
            if f.is("to") || f.is("cc") || f.is("bcc") {
                for a in parse_list(&f.value_str()) {
                    if let Address::Mailbox { .. } = a {
                        recipients.push(a.addr_spec());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let address = options
        .sender
        .clone()
        .unwrap_or_else(|| format!("{}@{}", who.login, who.hostname));
    let full_name = options.full_name.clone().or_else(|| who.full_name.clone());
    let date = now.strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
    let message_id = format!("{unique}@{}", who.hostname);
    let completion = Completion {
        from: &address,
        full_name: full_name.as_deref(),
        date: &date,
        message_id: &message_id,
    };
    for field in missing_fields(&header, &completion) {
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    // The original header, without Bcc when -t took recipients from it.
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            skipping =
                options.from_headers && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if header.is_empty() || !header.ends_with(b"\n\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(&body);
    let mut crlf = Vec::with_capacity(out.len() + out.len() / 40);
    for &b in &out {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    if !crlf.ends_with(b"\r\n") {
        crlf.extend_from_slice(b"\r\n");
    }
    (crlf, recipients)
}

/// Where cursusd's submission socket is: `$CURSUS_SUBMISSION_SOCKET`, else
/// `$CURSUS_DATA_DIR/submit.sock`, else the system daemon's /run/cursus/submit.sock or
/// /var/spool/cursus/submit.sock (its default) when one exists, else the single-user default
/// `~/.local/share/cursus/submit.sock`. The same order as the spool `-bp` reads.
pub fn submission_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("CURSUS_SUBMISSION_SOCKET") {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("CURSUS_DATA_DIR") {
        return PathBuf::from(d).join("submit.sock");
    }
    for system in ["/run/cursus/submit.sock", "/var/spool/cursus/submit.sock"] {
        let system = PathBuf::from(system);
        if system.exists() {
            return system;
        }
    }
    default_data_dir().join("submit.sock")
}

/// The single-user data directory when none is given (the daemon's own default).
pub fn default_data_dir() -> PathBuf {
    cursusd::daemon::default_data_dir()
}

/// One SMTP reply read from the daemon.
#[derive(Debug)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<SmtpReply> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        let line = line.trim_end();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"))
            })?;
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(line.get(4..).unwrap_or(""));
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(SmtpReply { code, text });
        }
    }
}

/// Why a submission failed.
#[derive(Debug)]
pub enum SubmitError {
    /// The daemon could not be reached.
    Unavailable(io::Error),
    /// The daemon refused: the reply.
    Refused(SmtpReply),
}

/// Submits over `stream` with SMTP; returns the final reply's text (it holds the queue id).
pub fn submit(
    stream: UnixStream,
    sender: &str,
    recipients: &[String],
    options: &Options,
    message: &[u8],
) -> Result<String, SubmitError> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
    let mut writer = stream.try_clone().map_err(SubmitError::Unavailable)?;
    let mut reader = BufReader::new(stream);
    let io = SubmitError::Unavailable;
    let expect = |reader: &mut BufReader<UnixStream>, ok: u16| -> Result<SmtpReply, SubmitError> {
        let r = read_reply(reader).map_err(io)?;
        if r.code / 100 == ok / 100 {
            Ok(r)
        } else {
            Err(SubmitError::Refused(r))
        }
    };
    expect(&mut reader, 220)?;
    writer.write_all(b"EHLO localhost\r\n").map_err(io)?;
    expect(&mut reader, 250)?;
    let mut mail = format!("MAIL FROM:<{sender}>");
    if let Some(r) = &options.ret {
        mail.push_str(&format!(" RET={r}"));
    }
    if let Some(v) = &options.envid {
        mail.push_str(&format!(" ENVID={v}"));
    }
    writer
        .write_all(format!("{mail}\r\n").as_bytes())
        .map_err(io)?;
    expect(&mut reader, 250)?;
    let mut accepted = 0;
    let mut last_refusal = None;
    for r in recipients {
        let mut rcpt = format!("RCPT TO:<{r}>");
        if let Some(n) = &options.notify {
            rcpt.push_str(&format!(" NOTIFY={n}"));
        }
        writer
            .write_all(format!("{rcpt}\r\n").as_bytes())
            .map_err(io)?;
        match expect(&mut reader, 250) {
            Ok(_) => accepted += 1,
            Err(SubmitError::Refused(reply)) => {
                eprintln!("cursus sendmail: {r}: {} {}", reply.code, reply.text);
                last_refusal = Some(reply);
            }
            Err(e) => return Err(e),
        }
    }
    if accepted == 0 {
        let _ = writer.write_all(b"QUIT\r\n");
        return Err(SubmitError::Refused(last_refusal.unwrap_or(SmtpReply {
            code: 554,
            text: "no recipients".to_string(),
        })));
    }
    writer.write_all(b"DATA\r\n").map_err(io)?;
    expect(&mut reader, 354)?;
    let mut stuffed = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            stuffed.push(b'.');
        }
        stuffed.push(b);
        at_line_start = b == b'\n';
    }
    stuffed.extend_from_slice(b".\r\n");
    writer.write_all(&stuffed).map_err(io)?;
    let done = expect(&mut reader, 250)?;
    if writer.write_all(b"QUIT\r\n").is_ok() {
        let _ = read_reply(&mut reader);
    }
    Ok(done.text)
}

/// Runs the personality; returns the exit status.
pub fn run(name: &str, args: &[String]) -> u8 {
    let options = match parse_args(name, args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}");
            return exit::USAGE;
        }
    };
    match options.mode {
        Mode::Deliver => deliver(name, &options),
        Mode::Smtp => relay_smtp(name),
        Mode::ListQueue => crate::queue_list::run(name),
        Mode::RebuildAliases => check_aliases(name),
        Mode::RunQueue => run_queue(name),
    }
}

fn who() -> Submitter {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let login = user
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| uid.to_string());
    let full_name = user
        .and_then(|u| u.gecos.into_string().ok())
        .map(|g| g.split(',').next().unwrap_or("").to_string())
        .filter(|g| !g.is_empty());
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    Submitter {
        login,
        full_name,
        hostname,
    }
}

fn unique_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}.{}.{random}", now.as_secs(), std::process::id())
}

fn deliver(name: &str, options: &Options) -> u8 {
    let message = match read_message(&mut io::stdin().lock(), options.ignore_dots) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{name}: reading the message: {e}");
            return exit::DATAERR;
        }
    };
    let who = who();
    let now = jiff::ZonedDateTime::now();
    let (message, header_recipients) = complete(&message, options, &who, &now, &unique_id());
    let mut recipients = options.recipients.clone();
    recipients.extend(header_recipients);
    if recipients.is_empty() {
        eprintln!("{name}: no recipients (give addresses, or -t to take them from the header)");
        return exit::USAGE;
    }
    if let Some(bad) = recipients.iter().find(|r| !safe_address(r, false)) {
        eprintln!("{name}: unusable recipient address {bad:?}");
        return exit::DATAERR;
    }
    let sender = options
        .sender
        .clone()
        .unwrap_or_else(|| format!("{}@{}", who.login, who.hostname));
    let sender = if sender == "<>" {
        String::new()
    } else {
        sender
    };
    let socket = submission_socket();
    let stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{name}: cursusd is not reachable at {}: {e}; the message was not sent",
                socket.display()
            );
            return exit::TEMPFAIL;
        }
    };
    match submit(stream, &sender, &recipients, options, &message) {
        Ok(text) => {
            if options.verbose {
                eprintln!("{name}: {text}");
            }
            exit::OK
        }
        Err(SubmitError::Unavailable(e)) => {
            eprintln!("{name}: submission failed: {e}");
            exit::TEMPFAIL
        }
        Err(SubmitError::Refused(r)) => {
            eprintln!("{name}: refused: {} {}", r.code, r.text);
            if r.code >= 500 {
                exit::NOPERM
            } else {
                exit::TEMPFAIL
            }
        }
    }
}

/// -bs: the daemon's SMTP dialogue on our stdin and stdout.
fn relay_smtp(name: &str) -> u8 {
    let socket = submission_socket();
    let stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{name}: cursusd is not reachable at {}: {e}",
                socket.display()
            );
            return exit::TEMPFAIL;
        }
    };
    let Ok(mut to_daemon) = stream.try_clone() else {
        return exit::TEMPFAIL;
    };
    let mut from_daemon = stream;
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut from_daemon, &mut io::stdout().lock());
    drop(upstream);
    exit::OK
}

/// -bi / newaliases: cursusd reads /etc/aliases itself and notices edits, so there is no
/// database to rebuild; check the file and say what it holds.
fn check_aliases(name: &str) -> u8 {
    let path = std::env::var_os("CURSUS_ALIASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/aliases"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!(
                "{name}: {}: no aliases file (nothing to do)",
                path.display()
            );
            return exit::OK;
        }
        Err(e) => {
            eprintln!("{name}: {}: {e}", path.display());
            return exit::UNAVAILABLE;
        }
    };
    match cursus_mail::aliases::parse(&text) {
        Ok(aliases) => {
            println!(
                "{name}: {}: {} aliases; cursusd reads the file directly (no database to rebuild)",
                path.display(),
                aliases.len()
            );
            exit::OK
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{}: {e}", path.display());
            }
            exit::DATAERR
        }
    }
}

/// -q: ask the running daemon to try every deferred message now (SIGUSR1 to the pid in its
/// data directory).
fn run_queue(name: &str) -> u8 {
    let data_dir = crate::queue_control::data_dir(None);
    let pid_file = data_dir.join("cursusd.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    let Some(pid) = pid else {
        eprintln!("{name}: no running cursusd found ({})", pid_file.display());
        return exit::UNAVAILABLE;
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    ) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("{name}: cannot signal cursusd (pid {pid}): {e}");
            exit::UNAVAILABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_as_mtas_and_scripts_pass_them() {
        let o = parse_args(
            "sendmail",
            &args(&["-t", "-oi", "-f", "a@b", "-FJoe", "x@y"]),
        )
        .expect("ok");
        assert!(o.from_headers && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("a@b"));
        assert_eq!(o.full_name.as_deref(), Some("Joe"));
        assert_eq!(o.recipients, vec!["x@y"]);
        assert_eq!(parse_args("mailq", &[]).expect("ok").mode, Mode::ListQueue);
        assert_eq!(
            parse_args("sendmail", &args(&["-bp"])).expect("ok").mode,
            Mode::ListQueue
        );
        assert_eq!(
            parse_args("newaliases", &[]).expect("ok").mode,
            Mode::RebuildAliases
        );
        assert_eq!(
            parse_args("sendmail", &args(&["-bs"])).expect("ok").mode,
            Mode::Smtp
        );
        assert_eq!(
            parse_args("sendmail", &args(&["-q"])).expect("ok").mode,
            Mode::RunQueue
        );
        assert!(parse_args("sendmail", &args(&["-Z"])).is_err());
    }

    #[test]
    fn injected_addresses_are_refused() {
        assert!(parse_args("sendmail", &args(&["--", "-oQ/tmp"])).is_err());
        assert!(parse_args("sendmail", &args(&["a@b>\r\nRCPT TO:<c@d"])).is_err());
        assert!(parse_args("sendmail", &args(&["-f", "x\ny"])).is_err());
        assert!(parse_args("sendmail", &args(&["-f", ""])).is_ok());
    }

    #[test]
    fn a_lone_dot_ends_input_unless_ignored() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(
            read_message(&mut &input[..], false).expect("read"),
            b"Subject: x\n\nline\n"
        );
        assert_eq!(
            read_message(&mut &input[..], true).expect("read"),
            input.to_vec()
        );
    }

    #[test]
    fn completion_adds_missing_fields_and_takes_recipients_with_t() {
        let who = Submitter {
            login: "joe".into(),
            full_name: Some("Joe User".into()),
            hostname: "host.example".into(),
        };
        let now: jiff::ZonedDateTime = "2026-11-23T10:00:00+00:00[UTC]".parse().expect("time");
        let o = Options {
            from_headers: true,
            ..Options::default()
        };
        let msg =
            b"To: a@x.example, \"B\" <b@y.example>\nBcc: secret@z.example\nSubject: hi\n\nbody\n";
        let (out, rcpts) = complete(msg, &o, &who, &now, "abc");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            rcpts,
            vec!["a@x.example", "b@y.example", "secret@z.example"]
        );
        assert!(text.starts_with("From: \"Joe User\" <joe@host.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <abc@host.example>\r\n"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");
        // Existing fields are kept, nothing is added twice.
        let (out, _) = complete(
            b"From: me@x\nDate: x\nMessage-ID: <m@x>\n\nb\n",
            &Options::default(),
            &who,
            &now,
            "u",
        );
        assert_eq!(
            out,
            b"From: me@x\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nb\r\n"
        );
        // No header at all: a blank line separates ours from the text.
        let (out, _) = complete(b"just text\n", &Options::default(), &who, &now, "u");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.ends_with("\r\n\r\njust text\r\n"), "{text}");
    }
}
