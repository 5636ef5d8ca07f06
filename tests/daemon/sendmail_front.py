#!/usr/bin/env python3
"""The sendmail front (`cursus sendmail`, and the `sendmail`/`mailq`/`newaliases` names)
against a running cursusd in single-user mode.

Checks: recipients on the command line; -t (To, Cc and Bcc read, Bcc removed from what is
delivered); -i and -oi (a lone dot is text) and without them (a lone dot ends the input);
-f (envelope sender: Return-Path, and the From it completes); -F (the full name in From);
Date, Message-ID and From completed when missing and never doubled when present; -bp and the
`mailq` name list a queued (deferred) message; -bi and `newaliases` check an aliases file
(and exit 65 on a broken one); -q asks the daemon for a queue run; an option-looking
recipient is refused (64); and with the daemon down: exit 75 and one clear line on stderr.

The front is run as the user the daemon runs as (the test user `cursus-td` under root),
finding the daemon through CURSUS_DATA_DIR as a user's shell would.

usage: python3 tests/daemon/sendmail_front.py
"""

import email
import email.policy
import email.utils
import os
import pwd
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

T = harness.Tally("sendmail_front")


class Front:
    def __init__(self, d):
        self.d = d
        self.cursus = os.path.join(d.bin, "cursus")
        # The personalities by name, as a distribution would link them.
        self.links = os.path.join(d.base, "links")
        os.makedirs(self.links, exist_ok=True)
        os.chmod(self.links, 0o755)
        for name in ("sendmail", "mailq", "newaliases"):
            p = os.path.join(self.links, name)
            if not os.path.lexists(p):
                os.symlink(self.cursus, p)

    def run(self, args, stdin=b"", name=None, env=None):
        argv = [os.path.join(self.links, name)] if name else [self.cursus, "sendmail"]
        e = self.d.env()
        e.update(env or {})
        p = subprocess.run(
            harness.as_user_argv(self.d.user) + argv + args,
            input=stdin,
            capture_output=True,
            env=e,
            timeout=60,
            cwd=self.d.base,
        )
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def parse(blob):
    return email.message_from_bytes(blob, policy=email.policy.compat32)


def one(d, local, timeout=10):
    files = d.wait_files(1, local, timeout=timeout)
    time.sleep(0.1)
    blobs = d.messages(local)
    return blobs


# The single-user routing, plus a smarthost route for remote.example to 127.0.0.1:9, where
# nothing listens: mail for it stays in the queue, deferred, for -bp to show.
ROUTING = """
[routing]
local_domains = ["localhost"]

[[router]]
name = "mailboxes"
driver = "virtual"
table = { file = "DATA/mailboxes" }
transport = "local"

[[router]]
name = "smarthost"
driver = "manualroute"
domains = ["remote.example"]
hosts = ["127.0.0.1"]
port = 9
transport = "remote"

[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:DATA/mail/${local}/Maildir"

[[transport]]
name = "remote"
driver = "smtp"
"""


def main():
    login = harness.TEST_USER if harness.IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name
    d = harness.Daemon("sendmail", routing=ROUTING, mailboxes=f"@localhost {login}\n")
    ok = False
    try:
        d.start()
        f = Front(d)

        # Recipients on the command line; nothing in the header: all three fields completed.
        rc, out, err = f.run(["plain@localhost"], b"Subject: plain\n\nhello\n")
        T.check(rc == 0, "cursus sendmail RCPT < message: exit 0", err)
        got = one(d, "plain")
        T.check(len(got) == 1, "delivered once")
        if got:
            m = parse(got[0])
            T.check(m["Date"] is not None and len(m.get_all("Date")) == 1, "Date completed", str(m["Date"]))
            mid = m.get_all("Message-ID") or []
            T.check(len(mid) == 1 and re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", mid[0].strip()), "Message-ID completed", str(mid))
            T.check(m["From"] is not None and f"{login}@" in m["From"], f"From completed with the login {login}", str(m["From"]))
            T.check(m.get_payload().replace("\r\n", "\n") == "hello\n", "body unchanged", repr(m.get_payload()))
            rp = m["Return-Path"] or ""
            T.check(f"{login}@" in rp, "envelope sender is the submitting user", rp)

        # Present fields are kept as they are, never doubled.
        rc, _, err = f.run(
            ["kept@localhost"],
            b"From: Someone <someone@x.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <kept-1@x.test>\nSubject: kept\n\nbody\n",
        )
        got = one(d, "kept")
        if T.check(rc == 0 and len(got) == 1, "message with its own From/Date/Message-ID delivered", err):
            m = parse(got[0])
            T.check(
                m.get_all("From") == ["Someone <someone@x.test>"]
                and m.get_all("Date") == ["Mon, 1 Jan 2024 00:00:00 +0000"]
                and m.get_all("Message-ID") == ["<kept-1@x.test>"],
                "present From, Date, Message-ID kept once each",
                str([m.get_all("From"), m.get_all("Date"), m.get_all("Message-ID")]),
            )

        # -t: To, Cc, Bcc; Bcc is not delivered.
        rc, _, err = f.run(
            ["-t"],
            b"To: t-to@localhost\nCc: \"Cee\" <t-cc@localhost>\nBcc: t-bcc@localhost\nSubject: dash t\n\nbody t\n",
        )
        T.check(rc == 0, "-t: exit 0", err)
        for local in ("t-to", "t-cc", "t-bcc"):
            got = one(d, local)
            T.check(len(got) == 1, f"-t: delivered to {local}")
            T.check(all(b"t-bcc" not in g.split(b"\n\n", 1)[0].replace(b"Delivered-To: t-bcc", b"") for g in got), f"-t: no Bcc field in {local}'s copy")

        # -t with only an empty group: no recipient, a usage error, nothing sent.
        rc, _, err = f.run(["-t"], b"To: undisclosed-recipients:;\nSubject: none\n\nbody\n")
        T.check(rc == 64 and "no recipients" in err, "-t without any recipient: exit 64 with the reason", f"{rc} {err}")
        # -F with quotes and a backslash: still one valid display name.
        rc, _, err = f.run(["-F", 'Joe "Q" \\ User', "quoted@localhost"], b"Subject: q\n\nbody\n")
        got = one(d, "quoted")
        if T.check(rc == 0 and len(got) == 1, "-F with quotes delivered", err):
            name, addr = email.utils.parseaddr(parse(got[0])["From"])
            T.check(name == 'Joe "Q" \\ User' and addr.startswith(f"{login}@"), "-F quotes are escaped in From", f"{name!r} {addr!r}")

        # -t with the same person in To and Cc: one copy.
        rc, _, err = f.run(["-t"], b"To: same@localhost\nCc: Same <same@localhost>\nSubject: same\n\nbody\n")
        d.wait_files(1, "same")
        time.sleep(0.5)
        T.check(rc == 0 and len(d.files("same")) == 1, "-t with one person in To and Cc: one copy", f"{len(d.files('same'))} {err}")

        # A lone dot: ends the input without -i, is text with -i and -oi.
        text = b"Subject: dots\n\nbefore\n.\nafter\n"
        rc1, _, e1 = f.run(["dot-none@localhost"], text)
        rc2, _, e2 = f.run(["-i", "dot-i@localhost"], text)
        rc3, _, e3 = f.run(["-oi", "dot-oi@localhost"], text)
        T.check(rc1 == rc2 == rc3 == 0, "dot messages: exit 0", e1 + e2 + e3)
        g = one(d, "dot-none")
        T.check(g and b"before" in g[0] and b"after" not in g[0], "without -i a lone dot ends the message")
        for local in ("dot-i", "dot-oi"):
            g = one(d, local)
            T.check(g and g[0].replace(b"\r\n", b"\n").endswith(b"before\n.\nafter\n"), f"{local}: the lone dot and what follows are delivered")

        # -f and -F.
        rc, _, err = f.run(["-f", "envelope@x.test", "-F", "Full Name", "ff@localhost"], b"Subject: f\n\nbody\n")
        got = one(d, "ff")
        if T.check(rc == 0 and len(got) == 1, "-f/-F message delivered", err):
            m = parse(got[0])
            T.check((m["Return-Path"] or "").strip() == "<envelope@x.test>", "-f sets the envelope sender (Return-Path)", str(m["Return-Path"]))
            T.check(m["From"] == '"Full Name" <envelope@x.test>', "-F puts the full name in the completed From", str(m["From"]))
        rc, _, err = f.run(["-fjoined@x.test", "fj@localhost"], b"Subject: fj\n\nbody\n")
        got = one(d, "fj")
        T.check(rc == 0 and got and b"Return-Path: <joined@x.test>" in got[0], "-fADDR (joined) works too", err)

        # -bs: SMTP on standard input and output, relayed to the daemon.
        dialog = (
            b"EHLO bs.example\r\nMAIL FROM:<bs@x.test>\r\nRCPT TO:<bs@localhost>\r\nDATA\r\n"
            b"Message-ID: <bs@x.test>\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n"
        )
        rc, out, err = f.run(["-bs"], dialog)
        codes = [l[:3] for l in out.splitlines() if l[3:4] == " "]
        T.check(rc == 0 and codes == ["220", "250", "250", "250", "354", "250", "221"], "-bs speaks SMTP on stdin/stdout", out + err)
        got = one(d, "bs")
        T.check(len(got) == 1 and b"local user" in got[0], "-bs message delivered, received as a local submission")
        if got:
            m = parse(got[0])
            T.check(len(m.get_all("Date") or []) == 1, "-bs: the daemon completes Date (the front only relays)", str(m.get_all("Date")))
            T.check(len(m.get_all("From") or []) == 1 and f"{login}@" in m["From"], f"-bs: the daemon completes From with the peer's login {login}", str(m.get_all("From")))
            T.check((m.get_all("Message-ID") or []) == ["<bs@x.test>"], "-bs: a Message-ID given is kept, not doubled", str(m.get_all("Message-ID")))
        dialog = (
            b"HELO bs.example\r\nMAIL FROM:<bs2@x.test>\r\nRCPT TO:<bs2@localhost>\r\nDATA\r\n"
            b"From: Someone <s@x.test>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\nSubject: bs2\r\n\r\nno id\r\n.\r\nQUIT\r\n"
        )
        rc, out, err = f.run(["-bs"], dialog)
        got = one(d, "bs2")
        T.check(rc == 0 and len(got) == 1, "-bs: a second message delivered", out + err)
        if got:
            m = parse(got[0])
            mid = m.get_all("Message-ID") or []
            T.check(len(mid) == 1 and re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", mid[0].strip()), "-bs: the daemon completes a missing Message-ID", str(mid))
            T.check(m.get_all("From") == ["Someone <s@x.test>"] and m.get_all("Date") == ["Mon, 01 Jan 2024 00:00:00 +0000"], "-bs: From and Date given are kept as they are", f"{m.get_all('From')} {m.get_all('Date')}")

        # The sendmail name.
        rc, _, err = f.run(["byname@localhost"], b"Subject: name\n\nbody\n", name="sendmail")
        T.check(rc == 0 and len(one(d, "byname")) == 1, "called as `sendmail`", err)

        # -bp / mailq: an empty queue, then a deferred message (its smarthost refuses
        # connections, so it stays queued).
        d.wait_queue_empty(10)
        rc, out, err = f.run(["-bp"])
        T.check(rc == 0 and "empty" in out.lower(), "-bp on an empty queue says so", out + err)
        rc, _, err = f.run(["faraway@remote.example"], b"Subject: stays\n\nqueued\n")
        T.check(rc == 0, "a message for another domain is accepted", err)
        time.sleep(0.5)
        rc, out, err = f.run(["-bp"])
        T.check(rc == 0 and "faraway@remote.example" in out, "-bp lists the queued message's recipient", out + err)
        T.check(re.search(r"^[0-9A-Z]{10,}", out, re.M) is not None, "-bp shows a queue id", out)
        rc, out2, err = f.run([], name="mailq")
        T.check(rc == 0 and "faraway@remote.example" in out2, "`mailq` lists it too", out2 + err)

        # -q: a queue run on request.
        rc, _, err = f.run(["-q"])
        deadline = time.monotonic() + 10
        while "queue run requested" not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        T.check(rc == 0 and "queue run requested" in d.log_text(), "-q asks the daemon for a queue run", err)

        # -q while the daemon is still starting: the pid file must not exist before SIGUSR1
        # is handled (its default action ends the process).
        early = harness.Daemon("sendmail-early")
        try:
            early.start(wait=False)
            pid_file = os.path.join(early.data, "cursusd.pid")
            deadline = time.monotonic() + 20
            pid = None
            while pid is None and time.monotonic() < deadline and early.proc.poll() is None:
                try:
                    text = open(pid_file).read().strip()
                    pid = int(text) if text else None
                except (OSError, ValueError):
                    pass
                time.sleep(0.0005)
            if T.check(pid == early.proc.pid, "the pid file names the daemon", f"{pid} vs {early.proc.pid}"):
                os.kill(pid, signal.SIGUSR1)
            time.sleep(0.5)
            T.check(early.proc.poll() is None, "SIGUSR1 (-q) as soon as the pid file exists does not kill cursusd", f"exit {early.proc.returncode}")
            early.wait_ready()
        except RuntimeError as e:
            T.check(False, "the early -q daemon starts", str(e)[:300])
        finally:
            early.cleanup(keep=bool(T.failed))

        # -bi / newaliases.
        aliases = os.path.join(d.base, "aliases")
        with open(aliases, "w") as fh:
            fh.write("postmaster: root\nstaff: a, b\n")
        os.chmod(aliases, 0o644)
        rc, out, err = f.run(["-bi"], env={"CURSUS_ALIASES": aliases})
        T.check(rc == 0 and "2 aliases" in out, "-bi checks the aliases file", out + err)
        rc, out, err = f.run([], name="newaliases", env={"CURSUS_ALIASES": aliases})
        T.check(rc == 0 and "2 aliases" in out, "`newaliases` too", out + err)
        with open(aliases, "w") as fh:
            fh.write("broken line without colon\n")
        rc, out, err = f.run(["-bi"], env={"CURSUS_ALIASES": aliases})
        T.check(rc == 65 and err.strip(), "-bi on a broken aliases file: exit 65 with the error", f"{rc} {out} {err}")

        # Injection through the command line.
        rc, _, err = f.run(["--", "-oQ/tmp/x"], b"Subject: x\n\nx\n")
        T.check(rc == 64, "an option-looking recipient is refused (64)", f"{rc} {err}")

        # The daemon down: 75 and one clear line.
        d.stop()
        rc, out, err = f.run(["down@localhost"], b"Subject: down\n\nbody\n")
        lines = [l for l in err.splitlines() if l.strip()]
        T.check(rc == 75, "daemon down: exit 75 (EX_TEMPFAIL)", f"{rc} {err}")
        T.check(
            len(lines) == 1 and "not reachable" in lines[0] and "submit.sock" in lines[0] and "not sent" in lines[0],
            "daemon down: one line naming the socket and saying the message was not sent",
            err,
        )
        T.check(not d.files("down"), "daemon down: nothing delivered")
        rc, out, err = f.run(["-bp"])
        T.check(rc == 0 and "faraway@remote.example" in out, "daemon down: -bp still lists the queued message", out + err)
        d.start()
        T.check("queue 1 messages" in d.log_text().split("---- start 2 ----")[-1], "restarted: the deferred message is recovered")
        d.stop()
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
