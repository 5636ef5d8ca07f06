#!/usr/bin/env python3
"""Real SMTP and LMTP clients against cursusd; every message must be delivered exactly once.

- swaks: a plain transaction, --pipeline, a 200 KB body, LMTP (--protocol LMTP) with two
  recipients.
- Python smtplib: 40 messages over one connection without pipelining; 40 messages with
  MAIL/RCPT/RCPT/DATA pipelined in one write (RFC 2920) over the same socket; 4 threads x 15
  messages at once; smtplib.LMTP with three recipients (one reply each).
- Postfix's smtp-source: `-s 5 -m 200` (one connection per message), `-s 5 -m 200 -d`
  (messages reusing connections) and `-L -s 2 -m 50` (LMTP).

- STARTTLS (a second cursusd with a certificate made by openssl): smtplib verifies the
  certificate, sends 5 messages, Received says ESMTPS; commands pipelined in the clear
  after STARTTLS are never answered (CVE-2011-0411) and the client must EHLO again.

Each message carries a unique Message-ID (smtp-source makes its own); at the end the
Maildirs hold each Message-ID exactly once per recipient, and the queue is empty.
Tools not installed (as an ordinary user without the Debian packages) are reported as SKIP
lines and their checks left out; with none of them at all the test exits 77.

usage: python3 tests/daemon/clients.py
"""

import collections
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

T = harness.Tally("clients")


def message(mid, to, body="Hello from the clients test.\r\n"):
    return (
        f"From: client@x.test\r\nTo: {to}\r\nSubject: {mid}\r\nMessage-ID: <{mid}@clients.test>\r\n\r\n{body}"
    )


def count_ids(d, local):
    return collections.Counter(harness.message_ids(d.messages(local)))


def expect_once(d, local, ids, what, timeout=60):
    """Each of `ids` (without <@clients.test>) delivered exactly once to `local`."""
    d.wait_files(len(ids), local, timeout=timeout)
    time.sleep(0.2)
    got = count_ids(d, local)
    want = {f"<{i}@clients.test>" for i in ids}
    missing = [i for i in want if got[i] == 0]
    dup = [i for i in want if got[i] > 1]
    extra = [i for i in got if i not in want]
    T.check(
        not missing and not dup and not extra,
        f"{what}: {len(ids)} messages delivered exactly once",
        f"missing {len(missing)} {sorted(missing)[:3]}, duplicated {len(dup)}, unexpected {len(extra)}",
    )


def run(argv, timeout=120):
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


# ---- swaks -------------------------------------------------------------------------------


def swaks(d):
    if not shutil.which("swaks"):
        print("SKIP: swaks not installed (scripts/install-test-deps.sh)")
        return False
    base = ["swaks", "--server", f"127.0.0.1:{d.port}", "--from", "swaks@x.test", "--silent", "2"]
    p, _ = run(base + ["--to", "swaks@localhost", "--header", "Message-Id: <swaks-plain@clients.test>"])
    T.check(p.returncode == 0, "swaks: plain transaction", p.stdout + p.stderr)
    p, _ = run(
        base
        + ["--pipeline", "--to", "swaks@localhost", "--header", "Message-Id: <swaks-pipe@clients.test>"]
    )
    T.check(p.returncode == 0, "swaks --pipeline", p.stdout + p.stderr)
    big = "".join(f"line {i:06d} of a long body ...........................................\n" for i in range(2600))
    path = os.path.join(d.base, "big.txt")
    with open(path, "w") as f:
        f.write(big)
    p, _ = run(
        base
        + ["--to", "swaks@localhost", "--header", "Message-Id: <swaks-big@clients.test>", "--body", "@" + path]
    )
    T.check(p.returncode == 0, f"swaks: a {len(big) // 1024} KB body", p.stdout + p.stderr)
    p, _ = run(
        [
            "swaks", "--server", f"127.0.0.1:{d.lmtp_port}", "--protocol", "LMTP",
            "--from", "swaks@x.test", "--to", "swaks@localhost,swaks2@localhost",
            "--header", "Message-Id: <swaks-lmtp@clients.test>", "--silent", "2",
        ]
    )
    T.check(p.returncode == 0, "swaks --protocol LMTP with two recipients", p.stdout + p.stderr)
    p, _ = run(base + ["--to", "nobody@elsewhere.invalid.example", "--quit-after", "RCPT"])
    T.check(p.returncode != 0 and "550" in p.stdout + p.stderr, "swaks sees a 550 for a domain no router takes")
    expect_once(d, "swaks", ["swaks-plain", "swaks-pipe", "swaks-big", "swaks-lmtp"], "swaks")
    expect_once(d, "swaks2", ["swaks-lmtp"], "swaks LMTP second recipient")
    got = [b for b in d.messages("swaks") if b"<swaks-big@clients.test>" in b]
    T.check(got and big.replace("\n", "\r\n").encode() in got[0].replace(b"\n", b"\r\n"), "swaks: the big body is delivered intact")
    return True


# ---- smtplib -----------------------------------------------------------------------------


def smtplib_plain(d):
    ids = [f"plain-{i}" for i in range(40)]
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("smtplib.example")
        for mid in ids:
            refused = s.sendmail("py@x.test", ["smtplib@localhost"], message(mid, "smtplib@localhost"))
            if refused:
                T.check(False, "smtplib sendmail", str(refused))
    expect_once(d, "smtplib", ids, "smtplib without pipelining, one connection")


def smtplib_pipelined(d):
    """MAIL, two RCPTs and DATA in one write, then the replies in order (RFC 2920)."""
    ids = [f"pipe-{i}" for i in range(40)]
    in_order = True
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("smtplib.example")
        T.check(s.has_extn("pipelining"), "smtplib sees PIPELINING")
        for mid in ids:
            s.send(
                "MAIL FROM:<py@x.test>\r\nRCPT TO:<piped@localhost>\r\n"
                "RCPT TO:<piped2@localhost>\r\nDATA\r\n"
            )
            codes = [s.getreply()[0] for _ in range(4)]
            if codes != [250, 250, 250, 354]:
                in_order = False
                print(f"  pipelined replies for {mid}: {codes}")
                s.rset()
                continue
            data = smtplib.quotedata(message(mid, "piped@localhost"))
            s.send(data.encode() + b"\r\n.\r\n")
            code, _ = s.getreply()
            in_order &= code == 250
    T.check(in_order, "smtplib pipelined: every group answered 250 250 250 354, then 250")
    expect_once(d, "piped", ids, "smtplib pipelined, first recipient")
    expect_once(d, "piped2", ids, "smtplib pipelined, second recipient")


def smtplib_threads(d):
    ids = [f"thr-{t}-{i}" for t in range(4) for i in range(15)]
    errors = []

    def worker(t):
        try:
            with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as s:
                for i in range(15):
                    mid = f"thr-{t}-{i}"
                    s.sendmail("py@x.test", ["threads@localhost"], message(mid, "threads@localhost"))
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {t}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    T.check(not errors, "smtplib: 4 threads sending at once", "; ".join(errors))
    expect_once(d, "threads", ids, "smtplib 4 threads x 15")


def smtplib_lmtp(d):
    # smtplib's sendmail() reads one reply after DATA; LMTP sends one per recipient, so the
    # transaction is spelled out here.
    with smtplib.LMTP("127.0.0.1", d.lmtp_port, timeout=30) as s:
        s.ehlo_or_helo_if_needed()
        s.mail("py@x.test")
        rcpts = ["lmtp-a@localhost", "lmtp-b@localhost", "lmtp-c@localhost"]
        codes = [s.rcpt(r)[0] for r in rcpts]
        first = s.data(message("lmtp-py", "lmtp-a@localhost"))[0]
        replies = [first] + [s.getreply()[0] for _ in rcpts[1:]]
        T.check(codes == [250] * 3 and replies == [250] * 3, "smtplib.LMTP: three recipients, three 250s after DATA", f"{codes} {replies}")
    for local in ("lmtp-a", "lmtp-b", "lmtp-c"):
        expect_once(d, local, ["lmtp-py"], f"smtplib.LMTP to {local}")


# ---- STARTTLS ----------------------------------------------------------------------------


def tls_daemon():
    """A second cursusd with a fresh self-signed certificate (openssl req), or None."""
    if not shutil.which("openssl"):
        print("SKIP: openssl not installed: no STARTTLS checks")
        return None
    d = harness.Daemon("clients-tls")
    cert, key = os.path.join(d.base, "cert.pem"), os.path.join(d.base, "key.pem")
    p = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        T.check(False, "openssl made a test certificate", p.stderr)
        return None
    os.chmod(cert, 0o644)
    os.chmod(key, 0o600)
    if d.user:
        pw = pwd.getpwnam(d.user)
        os.chown(key, pw.pw_uid, pw.pw_gid)
    with open(d.config, "a") as f:
        f.write(f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n')
    return d, cert


def starttls(d, cert):
    ctx = ssl.create_default_context(cafile=cert)
    ids = [f"tls-{i}" for i in range(5)]
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("tls.example")
        T.check(s.has_extn("starttls"), "EHLO advertises STARTTLS with a certificate")
        code, _ = s.starttls(context=ctx)
        T.check(code == 220, "smtplib STARTTLS handshake, certificate verified for 127.0.0.1")
        s.ehlo("tls.example")
        T.check(not s.has_extn("starttls"), "STARTTLS no longer offered inside TLS")
        for mid in ids:
            s.sendmail("py@x.test", ["tls@localhost"], message(mid, "tls@localhost"))
    expect_once(d, "tls", ids, "smtplib over STARTTLS")
    got = d.messages("tls")
    T.check(got and all(b"with ESMTPS" in g for g in got), "Received says ESMTPS")
    # Commands pipelined after STARTTLS in the clear are dropped (CVE-2011-0411).
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO x.example\r\n")
    while True:
        line = f.readline()
        if line[3:4] == b" ":
            break
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\nRCPT TO:<injected@localhost>\r\n")
    line = f.readline()
    T.check(line.startswith(b"220"), "STARTTLS with pipelined plaintext: 220", repr(line))
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    tls.settimeout(1.0)
    try:
        early = tls.recv(4096)
    except (socket.timeout, ssl.SSLError):
        early = b""
    T.check(early == b"", "nothing answers the commands injected before the handshake", repr(early))
    tls.settimeout(10)
    tls.sendall(b"MAIL FROM:<a@x.test>\r\n")
    reply = tls.recv(4096)
    T.check(reply.startswith(b"503"), "after TLS the client must EHLO again (MAIL: 503)", repr(reply))
    tls.close()


# ---- smtp-source -------------------------------------------------------------------------


def smtp_source(d):
    tool = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
    if not tool:
        print("SKIP: smtp-source not installed (Debian package postfix)")
        return False
    runs = [
        ("src", ["-s", "5", "-m", "200"], d.port, 200, "smtp-source -s 5 -m 200"),
        ("srcd", ["-s", "5", "-m", "200", "-d", "-l", "2000"], d.port, 200, "smtp-source -s 5 -m 200 -d -l 2000"),
        ("srcl", ["-L", "-s", "2", "-m", "50"], d.lmtp_port, 50, "smtp-source -L -s 2 -m 50 (LMTP)"),
    ]
    for local, args, port, n, what in runs:
        p, secs = run([tool] + args + ["-f", "source@x.test", "-t", f"{local}@localhost", f"127.0.0.1:{port}"])
        T.check(p.returncode == 0, f"{what}: exits 0 ({secs:.1f} s)", p.stdout + p.stderr)
        files = d.wait_files(n, local, timeout=60)
        time.sleep(0.3)
        files = d.files(local)
        ids = collections.Counter(harness.message_ids(d.messages(local)))
        T.check(
            len(files) == n and len(ids) == n and max(ids.values()) == 1,
            f"{what}: {n} messages delivered, {n} distinct Message-IDs",
            f"{len(files)} files, {len(ids)} distinct ids",
        )
    return True


def main():
    d = harness.Daemon("clients", lmtp=True)
    ok = False
    try:
        d.start()
        have = 0
        for fn in (swaks, smtp_source):
            try:
                have += 1 if fn(d) else 0
            except Exception as e:  # noqa: BLE001
                T.check(False, f"{fn.__name__} ran", f"{type(e).__name__}: {e}")
        for fn in (smtplib_plain, smtplib_pipelined, smtplib_threads, smtplib_lmtp):
            try:
                fn(d)
            except Exception as e:  # noqa: BLE001
                T.check(False, f"{fn.__name__} ran", f"{type(e).__name__}: {e}")
        T.check(d.wait_queue_empty(30), "the queue is empty at the end")
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        for local, n in (("src", 200), ("srcd", 200), ("srcl", 50), ("smtplib", 40), ("threads", 60), ("swaks", 4)):
            if not os.path.isdir(d.maildir(local)):
                continue
            r = harness.validate_maildir(d.maildir(local), n)
            if r is None:
                print("SKIP: shared/tools/validate_maildir.py not found: no independent Maildir check")
                break
            T.check(r[0], f"validate_maildir.py on mail/{local}/Maildir ({n} messages)", r[1])
        made = tls_daemon()
        if made:
            dt, cert = made
            try:
                dt.start()
                starttls(dt, cert)
            except Exception as e:  # noqa: BLE001
                T.check(False, "starttls ran", f"{type(e).__name__}: {e}")
            finally:
                dt.cleanup(keep=bool(T.failed))
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
