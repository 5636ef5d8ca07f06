#!/usr/bin/env python3
"""What cursusd does at reception, end to end, that needs its own configuration:

1. Early talkers with no greet pause: a client whose EHLO is already waiting when the
   greeting is due is refused (554 5.5.1) and disconnected, as Exim's smtp_enforce_sync
   does. Made deterministic by stopping the daemon (SIGSTOP) while the client connects and
   writes, so the bytes are queued before the daemon accepts the connection.
2. The RFC 5321 §4.5.3.2 timeouts, shortened to 1 s: after the greeting, waiting for MAIL,
   for RCPT, for DATA, within DATA content and within a BDAT chunk, each answered 421 4.4.2
   and closed (not before the second); a client that never reads its replies is cut off
   when a write does not finish within the time (closed without a reply, and logged).
3. LMTP on a unix socket (Python's smtplib.LMTP, and raw per-recipient replies).
4. The log line of a local delivery: queue id, to=, router=, transport=, delay=, dsn=,
   status=sent.
5. verify_remote_recipients: off (the default) a relayed recipient is accepted once relaying
   is allowed; on, a relay-domain address no verification router accepts is 550 5.1.1 and a
   failed lookup 451 4.3.0, while the known ones get 250. Either way a domain no router can
   route is 550 5.4.4.

usage: python3 tests/daemon/reception.py
"""

import os
import re
import signal
import smtplib
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Raw  # noqa: E402

T = harness.Tally("reception")

SHORT = [
    "initial_timeout = 1",
    "mail_timeout = 1",
    "rcpt_timeout = 1",
    "data_block_timeout = 1",
]


def raw_unix(path):
    """A Raw client over a unix socket."""
    c = Raw.__new__(Raw)
    c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.sock.settimeout(10)
    c.sock.connect(path)
    c.buf = b""
    c.log = []
    c.greeting = c.reply(record=False)
    return c


# ---- 1. early talker ---------------------------------------------------------------------


def early_talker(d):
    os.kill(d.pid(), signal.SIGSTOP)
    try:
        early = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        early.sendall(b"EHLO early.example\r\n")
        patient = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        time.sleep(0.2)
    finally:
        os.kill(d.pid(), signal.SIGCONT)
    c = Raw.__new__(Raw)
    c.sock, c.buf, c.log = early, b"", []
    try:
        code, text = c.reply()
    except (OSError, EOFError, ValueError) as e:
        code, text = None, [str(e)]
    T.check(code == 554 and text[0].startswith("5.5.1"), "greet pause 0: EHLO sent before the greeting is refused with 554 5.5.1", f"{code} {text}")
    T.check(c.closed(), "... and the early talker is disconnected")
    c.close()
    p = Raw.__new__(Raw)
    p.sock, p.buf, p.log = patient, b"", []
    code, _ = p.reply(record=False)
    T.check(code == 220, "a client connected at the same time that waits gets 220", str(code))
    p.ehlo()
    T.check(p.code("NOOP") == 250, "... and is served")
    p.close()
    T.check("talked before the greeting" in d.log_text(), "the refusal is logged")


# ---- 2. timeouts -------------------------------------------------------------------------


def expect_timeout(c, what, started):
    try:
        code, text = c.reply()
    except (OSError, EOFError, ValueError) as e:
        code, text = None, [str(e)]
    waited = time.monotonic() - started
    T.check(
        code == 421 and text[0].startswith("4.4.2") and 0.9 <= waited < 8,
        f"timeout {what}: 421 4.4.2 after about 1 s",
        f"{code} {text} after {waited:.2f} s",
    )
    T.check(c.closed(), f"timeout {what}: connection closed")
    c.close()


def timeouts(d):
    c = Raw(d.port)
    expect_timeout(c, "after the greeting (initial)", time.monotonic())

    c = Raw(d.port)
    c.ehlo()
    expect_timeout(c, "waiting for MAIL", time.monotonic())

    c = Raw(d.port)
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>")
    expect_timeout(c, "waiting for RCPT", time.monotonic())

    c = Raw(d.port)
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<t@localhost>")
    expect_timeout(c, "waiting for DATA (after RCPT)", time.monotonic())

    c = Raw(d.port)
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<t@localhost>")
    code, _ = c.cmd("DATA")
    c.send("Subject: slow\r\n\r\nhalf a li")
    expect_timeout(c, "within DATA content (data block)", time.monotonic())

    c = Raw(d.port)
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<t@localhost>")
    c.send("BDAT 100 LAST\r\nonly ten..")
    expect_timeout(c, "within a BDAT chunk (data block)", time.monotonic())

    T.check(
        re.search(r"timeout after 1 s waiting for the client \(Mail, RFC 5321 4\.5\.3\.2\.2\)", d.log_text()) is not None,
        "a timeout is logged with its stage and RFC section",
    )

    # A client that pipelines commands and never reads the replies: once the socket buffers
    # are full the daemon's write cannot finish; it gives up after the stage's time.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", d.port))
    flood = b"EHLO flood.example\r\n" * 200000

    def pour():
        try:
            s.sendall(flood)
        except OSError:
            pass

    t = threading.Thread(target=pour, daemon=True)
    started = time.monotonic()
    t.start()
    deadline = started + 30
    logged = False
    while time.monotonic() < deadline:
        if "writing to the client (it does not read)" in d.log_text():
            logged = True
            break
        time.sleep(0.1)
    T.check(logged, "a client that never reads: the write times out and is logged", f"{time.monotonic() - started:.1f} s")
    # Closed: reading what the buffers hold ends in EOF or a reset, not in a hang.
    s.settimeout(10)
    closed = False
    try:
        while True:
            if not s.recv(1 << 20):
                closed = True
                break
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        closed = False
    T.check(closed, "... and the connection is closed")
    s.close()
    T.check(Raw(d.port).greeting[0] == 220, "the daemon serves on after the timeouts")


# ---- 3. LMTP on a unix socket ------------------------------------------------------------


def lmtp_unix(d, path):
    T.check(os.path.exists(path), "the LMTP unix socket exists", path)
    lm = smtplib.LMTP(path, timeout=10)
    code, _ = lm.ehlo("postfix.example")  # smtplib.LMTP sends LHLO
    T.check(code == 250, "smtplib.LMTP over a unix socket: LHLO 250", str(code))
    lm.sendmail("a@x.test", ["lmtp1@localhost"], b"Message-ID: <lmtp1@x.test>\r\nSubject: lmtp\r\n\r\nvia a unix socket\r\n")
    lm.quit()
    got = d.wait_files(1, "lmtp1")
    T.check(len(got) == 1, "... delivered", str(got))

    c = raw_unix(path)
    T.check(c.greeting[0] == 220 and "LMTP" in c.greeting[1][0], "raw LMTP greeting on the unix socket", str(c.greeting))
    c.ehlo(verb="LHLO")
    c.cmd("MAIL FROM:<a@x.test>")
    codes = [c.code("RCPT TO:<lmtp2@localhost>"), c.code("RCPT TO:<lmtp3@localhost>")]
    c.cmd("DATA")
    c.send(b"Message-ID: <lmtp23@x.test>\r\n\r\ntwo recipients\r\n.\r\n")
    replies = [c.reply(), c.reply()]
    T.check(codes == [250, 250] and [r[0] for r in replies] == [250, 250], "LMTP: one reply per recipient after the message", f"{codes} {replies}")
    c.cmd("QUIT")
    c.close()
    T.check(len(d.wait_files(1, "lmtp2")) == 1 and len(d.wait_files(1, "lmtp3")) == 1, "... both delivered")


# ---- 4. the log line of a local delivery -------------------------------------------------


def delivery_log_line(d):
    s = smtplib.SMTP("127.0.0.1", d.port, timeout=10)
    s.ehlo("logline.example")
    s.mail("a@x.test")
    s.rcpt("logline@localhost")
    code, text = s.data(b"Message-ID: <logline@x.test>\r\n\r\nlog line\r\n")
    s.quit()
    m = re.search(rb"queued as (\S+)", text)
    queue_id = m.group(1).decode() if m else "?"
    T.check(code == 250 and m, "a message for the log line test: 250 with a queue id", f"{code} {text!r}")
    d.wait_files(1, "logline")
    line = None
    deadline = time.monotonic() + 10
    while line is None and time.monotonic() < deadline:
        for l in d.log_text().splitlines():
            if "to=<logline@localhost>" in l and "status=" in l:
                line = l
        time.sleep(0.05)
    pattern = re.compile(
        r"^cursusd: (?P<id>\S+): to=<logline@localhost>, router=(?P<router>[\w.-]+), "
        r"transport=(?P<transport>[\w.-]+), delay=(?P<delay>\d+\.\d\d), delays=\d+\.\d{3}, "
        r"dsn=2\.0\.0, status=sent \(.+\)$"
    )
    m = pattern.match(line or "")
    T.check(m is not None, "local delivery log line: queue id, to=, router=, transport=, delay=, delays=, dsn=, status=sent (...)", str(line))
    if m:
        T.check(m.group("id") == queue_id, "... its queue id is the one in the 250 reply", f"{m.group('id')} vs {queue_id}")
        T.check(m.group("transport") == "local" and float(m.group("delay")) < 30, "... transport=local and a plausible delay", line)
    arrival = [l for l in d.log_text().splitlines() if l.startswith(f"cursusd: {queue_id}: from=<a@x.test>")]
    T.check(len(arrival) == 1 and "nrcpt=1" in arrival[0] and "size=" in arrival[0], "the arrival line: from=, size=, nrcpt=", str(arrival))


# ---- 5. verify_remote_recipients ---------------------------------------------------------

RELAY_ROUTING = """
[routing]
local_domains = ["localhost"]

[[router]]
name = "mailboxes"
driver = "virtual"
table = { file = "DATA/mailboxes" }
transport = "local"

[[router]]
name = "relayed"
driver = "manualroute"
domains = ["relay.test"]
local_parts = ["known", "re:list-.*"]
hosts = ["127.0.0.1"]
port = 9
transport = "remote"

[[router]]
name = "broken"
driver = "aliases"
domains = ["broken.test"]
file = "DATA/no-such-aliases"

[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:DATA/mail/${local}/Maildir"

[[transport]]
name = "remote"
driver = "smtp"
"""


def rcpt_replies(d, addresses):
    c = Raw(d.port)
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>")
    out = {a: c.cmd(f"RCPT TO:<{a}>") for a in addresses}
    c.cmd("QUIT")
    c.close()
    return out


def verify_remote(login):
    addresses = ["known@relay.test", "list-x@relay.test", "nobody@relay.test", "x@broken.test", "me@localhost", "x@unroutable.example"]
    off = harness.Daemon("verify-off", routing=RELAY_ROUTING, mailboxes=f"@localhost {login}\n")
    on = harness.Daemon(
        "verify-on",
        smtp=["verify_remote_recipients = true"],
        routing=RELAY_ROUTING,
        mailboxes=f"@localhost {login}\n",
    )
    ok = False
    try:
        off.start()
        r = rcpt_replies(off, addresses)
        unroutable = r.pop("x@unroutable.example")
        T.check(all(code == 250 for code, _ in r.values()), "verify_remote_recipients off: every relayed recipient is accepted from a client that may relay", str(r))
        T.check(unroutable[0] == 550 and unroutable[1][0].startswith("5.4.4"), "... but a domain no router can route is 550 5.4.4", str(unroutable))
        on.start()
        r = rcpt_replies(on, addresses)
        T.check(r["known@relay.test"][0] == 250 and r["list-x@relay.test"][0] == 250, "verify_remote_recipients on: addresses a verification router accepts get 250", str(r))
        code, text = r["nobody@relay.test"]
        T.check(code == 550 and text[0].startswith("5.1.1"), "... an address no verification router accepts: 550 5.1.1", f"{code} {text}")
        code, text = r["x@broken.test"]
        T.check(code // 100 == 4 and text[0].startswith("4.3."), "... a failed lookup (missing aliases file): 4xx 4.3.x", f"{code} {text}")
        T.check(r["me@localhost"][0] == 250, "... local recipients as before", str(r["me@localhost"]))
        code, text = r["x@unroutable.example"]
        T.check(code == 550 and text[0].startswith("5.4.4"), "... a domain no router can route: 550 5.4.4", f"{code} {text}")
        ok = not T.failed
    finally:
        off.cleanup(keep=not ok)
        on.cleanup(keep=not ok)


def main():
    import pwd

    login = harness.TEST_USER if harness.IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name
    d = harness.Daemon(
        "reception",
        smtp=SHORT,
        routing='[lmtp]\nlisten = ["unix:DATA/lmtp.sock"]\n',
    )
    ok = False
    try:
        d.start()
        early_talker(d)
        timeouts(d)
        lmtp_unix(d, os.path.join(d.data, "lmtp.sock"))
        delivery_log_line(d)
        T.check(d.proc.poll() is None and "panicked" not in d.log_text(), "no panic, still running")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
    verify_remote(login)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
