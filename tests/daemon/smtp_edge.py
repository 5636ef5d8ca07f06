#!/usr/bin/env python3
"""RFC 5321 edge cases against a real cursusd, over raw sockets.

The seven groups of shared/reference/oracles.md §2 ("RFC 5321 edge cases to script"):
  1 greeting and ordering (early talker refused, 503s, 501s, RSET/NOOP, EHLO resets)
  2 command syntax (case, spaces, <>, null sender, postmaster, source routes, quoted local
    parts, address literals, 64-octet local part, long domain)
  3 line limits (command line, 1000+ octet text line, SIZE exactly at and over the limit,
    SIZE= parameter, unknown parameter)
  4 DATA transparency (dot-stuffing, empty message, NUL, 8-bit) and SMTP smuggling: every
    end-of-data variant must be content, never an end of DATA, and the smuggled second
    message must never be delivered (the Maildirs are searched for it)
  5 extensions (PIPELINING in order and DATA refused without a valid RCPT, 8BITMIME,
    SMTPUTF8, CHUNKING/BDAT with BDAT 0 LAST and BINARYMIME, DSN parameters and a success
    DSN, STARTTLS not offered without a certificate)
  6 limits and abuse (452 beyond 100 recipients, messages per connection, connections per
    client, VRFY/EXPN 252/502, disconnect in every state)
  7 reply format (multi-line EHLO, an enhanced status code on every reply of the run, 421
    at shutdown)
plus unknown local recipient 550 5.1.1 at RCPT, RSET, and LMTP per-recipient replies.

Not here: the RFC 5321 §4.5.3.2 timeouts (minutes long) and STARTTLS with a certificate
(crates/daemon/tests/starttls.rs covers it).

usage: python3 tests/daemon/smtp_edge.py      (exit 0 pass, 1 fail)
"""

import os
import pwd
import signal
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Raw  # noqa: E402

T = harness.Tally("smtp_edge")
LOG = []  # every reply of the run, for the enhanced status code check
ME = harness.TEST_USER if harness.IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name
SIZE_LIMIT = 20000
MSGS_PER_CONN = 30
PER_CLIENT = 10

ROUTING = """
[routing]
local_domains = ["localhost", "example.test"]

[[router]]
name = "mailboxes"
driver = "virtual"
table = { file = "DATA/mailboxes" }
transport = "local"

[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:DATA/mail/${local}/Maildir"
"""


def msg(mid, body="hello\r\n", headers=""):
    return (
        f"Message-ID: <{mid}@edge.test>\r\nFrom: a@x.test\r\nSubject: {mid}\r\n{headers}\r\n{body}"
    ).encode()


def connect(d, **kw):
    return Raw(d.port, log=LOG, **kw)


def session(d, name="client.example"):
    c = connect(d)
    c.ehlo(name)
    return c


def delivered(d, mid, timeout=10, count=1):
    """Delivered messages whose Message-ID is <mid@edge.test>, waiting up to `timeout` for
    `count` of them (then a short while for more)."""
    want = f"<{mid}@edge.test>"
    deadline = time.monotonic() + timeout
    while True:
        blobs = d.messages()
        found = [b for b, m in zip(blobs, harness.message_ids(blobs)) if m == want]
        if len(found) >= count or time.monotonic() > deadline:
            if found:
                time.sleep(0.1)
                blobs = d.messages()
                found = [b for b, m in zip(blobs, harness.message_ids(blobs)) if m == want]
            return found
        time.sleep(0.05)


def all_ids(d):
    return harness.message_ids(d.messages())


def send_message(d, rcpts, data, mail="MAIL FROM:<a@x.test>"):
    """One whole transaction; returns the final reply code."""
    c = session(d)
    c.cmd(mail)
    for r in rcpts:
        c.cmd(f"RCPT TO:<{r}>")
    code, _ = c.cmd("DATA")
    if code != 354:
        c.close()
        return code
    c.send(data + b"\r\n.\r\n")
    code, _ = c.reply()
    c.cmd("QUIT")
    c.close()
    return code


def group(fn, *args):
    """Runs one group; an exception is a failure of the group, the run goes on."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        T.check(False, f"{fn.__name__} ran to the end", f"{type(e).__name__}: {e}")
        traceback.print_exc()


# ---- 1. greeting and ordering ------------------------------------------------------------


def g1_ordering(d, slow):
    # Early talker: a client that speaks before the greeting (greet pause 400 ms).
    c = Raw(slow.port, greet=False, log=LOG)
    c.send("EHLO early.example\r\n")
    code, text = c.reply()
    T.check(code == 554 and text[0].startswith("5.5.1"), "early talker refused with 554 5.5.1", f"{code} {text}")
    T.check(c.closed(), "early talker disconnected")
    c.close()
    t0 = time.monotonic()
    c = Raw(slow.port, log=LOG)
    waited = time.monotonic() - t0
    T.check(
        c.greeting[0] == 220 and waited >= 0.3,
        "a client that waits gets 220 after the greet pause",
        f"{c.greeting} after {waited:.2f}s",
    )
    c.ehlo()
    T.check(c.code("MAIL FROM:<a@x.test>") == 250, "the patient client may send mail")
    c.close()
    # The total connection limit (3 on this daemon).
    held = [Raw(slow.port, log=LOG) for _ in range(3)]
    over = Raw(slow.port, greet=False, log=LOG)
    code, text = over.reply()
    T.check(code == 421 and text[0].startswith("4.7.0"), "connection over max_connections: 421 4.7.0", f"{code} {text}")
    for h in held + [over]:
        h.close()

    c = connect(d)
    T.check(c.code("NOOP") == 250, "NOOP before HELO: 250")
    T.check(c.code("RSET") == 250, "RSET before HELO: 250")
    T.check(c.code("MAIL FROM:<a@x.test>") == 503, "MAIL before EHLO: 503")
    T.check(c.code("HELO") == 501, "HELO without argument: 501")
    T.check(c.code("EHLO") == 501, "EHLO without argument: 501")
    c.ehlo()
    T.check(c.code("RCPT TO:<u@localhost>") == 503, "RCPT before MAIL: 503")
    T.check(c.code("DATA") == 503, "DATA before MAIL: 503")
    T.check(c.code("MAIL FROM:<a@x.test>") == 250, "MAIL after EHLO: 250")
    code = c.code("DATA")
    T.check(code in (503, 554), "DATA without any RCPT: 503/554", str(code))
    T.check(c.code("MAIL FROM:<b@x.test>") == 503, "second MAIL without RSET: 503")
    T.check(c.code("NOOP") == 250, "NOOP inside a transaction: 250")
    T.check(c.code("RCPT TO:<nobody@example.test>") == 550, "only refused recipients ...")
    code = c.code("DATA")
    T.check(code in (503, 554), "... then DATA: 503/554", str(code))
    T.check(c.code("RCPT TO:<u@localhost>") == 250, "RCPT after a refused DATA: 250")
    code, _ = c.ehlo("again.example")
    T.check(code == 250, "EHLO twice: 250")
    T.check(c.code("RCPT TO:<u@localhost>") == 503, "the second EHLO reset the transaction (RCPT: 503)")
    T.check(c.code("MAIL FROM:<a@x.test>") == 250, "a new MAIL after the second EHLO: 250")
    T.check(c.code("XYZZY") == 500, "unknown verb: 500")
    T.check(c.code("QUIT") == 221, "QUIT: 221")
    T.check(c.closed(), "closed after QUIT")
    c.close()


def rset(d):
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<rset@localhost>")
    code, text = c.cmd("RSET")
    T.check(code == 250 and text[0].startswith("2.0.0"), "RSET in a transaction: 250 2.0.0", f"{code} {text}")
    T.check(c.code("RCPT TO:<rset@localhost>") == 503, "RSET ended the transaction (RCPT: 503)")
    T.check(c.code("MAIL FROM:<a@x.test>") == 250, "MAIL after RSET: 250")
    T.check(c.code("RCPT TO:<rset@localhost>") == 250, "RCPT after RSET and MAIL: 250")
    c.cmd("DATA")
    c.send(msg("rset") + b"\r\n.\r\n")
    T.check(c.reply()[0] == 250, "message after RSET accepted")
    c.close()
    T.check(len(delivered(d, "rset")) == 1, "message after RSET delivered once")


def duplicate_recipients(d):
    """The same recipient given twice (once in another case) gets one copy, as Postfix and
    Exim deliver it: a message To: and Cc: the same person is not a second message."""
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    codes = [c.code("RCPT TO:<twice@localhost>"), c.code("RCPT TO:<twice@localhost>"), c.code("RCPT TO:<Twice@LOCALHOST>")]
    c.cmd("DATA")
    c.send(msg("twice") + b"\r\n.\r\n")
    T.check(codes == [250, 250, 250] and c.reply()[0] == 250, "the same recipient three times: accepted")
    c.close()
    d.wait_files(1, "twice")
    time.sleep(0.5)
    n = len(d.files("twice")) + len(d.files("Twice"))
    T.check(n == 1, f"the same recipient three times: one copy delivered ({n})")


def unknown_recipient(d):
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    code, text = c.cmd("RCPT TO:<nobody@example.test>")
    T.check(code == 550 and text[0].startswith("5.1.1"), "unknown local recipient: 550 5.1.1 at RCPT", f"{code} {text}")
    code, text = c.cmd("RCPT TO:<known@example.test>")
    T.check(code == 250, "known recipient of the same domain: 250", f"{code} {text}")
    c.cmd("QUIT")
    c.close()


# ---- 2. command syntax -------------------------------------------------------------------


def g2_syntax(d):
    c = session(d)
    T.check(c.code("mAiL fRoM:<Case@x.test>") == 250, "case-insensitive MAIL FROM")
    T.check(c.code("rCpT tO:<case@localhost>") == 250, "case-insensitive RCPT TO")
    T.check(c.code("RCPT TO:<postmaster>") == 250, "RCPT TO:<postmaster> without a domain: 250 (§4.5.1)")
    T.check(c.code("RCPT TO:<@a.example,@b.example:route@localhost>") == 250, "source route accepted, route ignored")
    T.check(c.code('RCPT TO:<"a b"@localhost>') == 250, 'quoted local part "a b"@localhost: 250')
    lp64 = "l" * 64
    T.check(c.code(f"RCPT TO:<{lp64}@localhost>") == 250, "64-octet local part: 250")
    c.cmd("DATA")
    c.send(msg("syntax") + b"\r\n.\r\n")
    T.check(c.reply()[0] == 250, "message to the syntax recipients accepted")
    got = delivered(d, "syntax")
    for local in ("case", "postmaster", "route", "a b", lp64):
        T.check(len(d.wait_files(1, local, timeout=5)) == 1, f"delivered to mail/{local[:20]}/Maildir")
    T.check(len(got) >= 1, "syntax message delivered")

    c.cmd("RSET")
    code = c.code("MAIL FROM: <space@x.test>")
    T.check(code in (250, 501), f"space after the colon: {code} (250 tolerated, 501 strict)")
    c.cmd("RSET")
    code = c.code("MAIL FROM:bare@x.test")
    T.check(code in (250, 501), f"missing <> around the path: {code}")
    c.cmd("RSET")
    T.check(c.code("MAIL FROM:<>") == 250, "null sender MAIL FROM:<>: 250")
    for lit in ("u@[127.0.0.1]", "u@[IPv6:::1]"):
        code, text = c.cmd(f"RCPT TO:<{lit}>")
        T.check(code not in (500, 501, 553, 555), f"address literal {lit} is not a syntax error", f"{code} {text}")
    domain = ".".join(["d" * 49] * 5)  # 249 octets
    code, text = c.cmd(f"RCPT TO:<u@{domain}>")
    T.check(code not in (500, 501, 553), "a 249-octet domain is not a syntax error", f"{code} {text}")
    code, text = c.cmd("RCPT TO:<empty-domain@>")
    T.check(
        code in (501, 550, 553) and text[0][:5] in ("5.1.3", "5.5.4", "5.1.7"),
        "an empty domain is refused as bad syntax (5.1.3)",
        f"{code} {text}",
    )
    c.cmd("QUIT")
    c.close()


# ---- 3. line limits ----------------------------------------------------------------------


def g3_limits(d):
    c = session(d)
    line = "NOOP " + "x" * (512 - 2 - 5)
    T.check(c.code(line) == 250, "a 512-octet command line (RFC minimum) is read")
    code, text = c.cmd("NOOP " + "x" * 3000)
    T.check(code == 500 and text[0].startswith("5.5.2"), "a 3000-octet command line: 500 5.5.2", f"{code} {text}")
    T.check(c.code("NOOP") == 250, "the session goes on after a long line")

    _, ehlo = c.ehlo()
    T.check(f"SIZE {SIZE_LIMIT}" in ehlo, f"EHLO advertises SIZE {SIZE_LIMIT}", str(ehlo))
    code, text = c.cmd(f"MAIL FROM:<a@x.test> SIZE={SIZE_LIMIT + 1}")
    T.check(code == 552 and text[0].startswith("5.3.4"), "MAIL SIZE= over the limit: 552 5.3.4", f"{code} {text}")
    code, text = c.cmd("MAIL FROM:<a@x.test> FOO=bar")
    T.check(code == 555, "unknown MAIL parameter: 555", f"{code} {text}")
    T.check(c.code(f"MAIL FROM:<a@x.test> SIZE={SIZE_LIMIT}") == 250, "MAIL SIZE= at the limit: 250")
    c.cmd("RCPT TO:<size@localhost>")
    c.cmd("DATA")
    # The limit counts the content as received, CRLFs included, up to the end-of-data line.
    head = msg("size-at", body="")
    fill = SIZE_LIMIT - len(head) - 2
    body = head + b"y" * fill + b"\r\n"
    assert len(body) == SIZE_LIMIT
    c.send(body + b".\r\n")
    code, text = c.reply()
    T.check(code == 250, f"a message of exactly {SIZE_LIMIT} octets: 250", f"{code} {text}")
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<size@localhost>")
    c.cmd("DATA")
    head = msg("size-over", body="")
    body = head + b"y" * (SIZE_LIMIT - len(head) - 1) + b"\r\n"
    c.send(body + b".\r\n")
    code, text = c.reply()
    T.check(code == 552 and text[0].startswith("5.3.4"), f"a message of {SIZE_LIMIT + 1} octets: 552 5.3.4", f"{code} {text}")
    T.check(c.code("NOOP") == 250, "the session goes on after 552")
    c.close()
    T.check(len(delivered(d, "size-at")) == 1, "the message at the limit is delivered")
    T.check(len(delivered(d, "size-over", timeout=0.5)) == 0, "the message over the limit is not")

    long_line = "L" * 1500
    code = send_message(d, ["long@localhost"], msg("longline", body=long_line + "\r\nend\r\n"))
    T.check(code == 250, "a 1500-octet text line in DATA is accepted (rule: kept unchanged)")
    got = delivered(d, "longline")
    T.check(len(got) == 1 and long_line.encode() in got[0], "the 1500-octet line is delivered unchanged, not wrapped")


# ---- 4. DATA transparency and smuggling --------------------------------------------------

# Every spelling of end-of-data that is not CR LF . CR LF (oracles.md §2, crates/proto/NOTES.md,
# and the variants of the public SMTP smuggling scanners).
SMUGGLE = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\r\n.\r\r\n",
    b"\r\n.\r\r\n",
    b"\n\n.\n\n",
]


def g4_transparency(d):
    body = "..leading dot\r\n..\r\n...\r\nlast line\r\n"
    T.check(send_message(d, ["dots@localhost"], msg("dots", body=body)) == 250, "dot-stuffed message accepted")
    got = delivered(d, "dots")
    text = got[0].replace(b"\r\n", b"\n") if got else b""
    T.check(
        b"\n.leading dot\n.\n..\nlast line\n" in text,
        "dot-stuffing undone: '..x' -> '.x', '..' -> '.', '...' -> '..'",
        repr(text[-80:]),
    )
    T.check(
        send_message(d, ["nofinal@localhost"], msg("nofinal", body="no newline at the end")) == 250,
        "a body whose last line has no CRLF of its own: 250",
    )
    got = delivered(d, "nofinal")
    T.check(len(got) == 1 and got[0].replace(b"\r\n", b"\n").endswith(b"no newline at the end\n"), "... delivered with its text")

    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<empty@localhost>")
    c.cmd("DATA")
    c.send(b".\r\n")
    T.check(c.reply()[0] == 250, "an empty message (DATA then .): 250")
    c.close()
    T.check(len(d.wait_files(1, "empty", timeout=5)) == 1, "the empty message is delivered")

    T.check(send_message(d, ["nul@localhost"], msg("nul", body="a\x00b\r\n")) == 250, "NUL byte in DATA accepted")
    got = delivered(d, "nul")
    T.check(len(got) == 1 and b"a\x00b" in got[0], "NUL byte delivered unchanged")
    eight = msg("eightbit", body="") + "caf\u00e9 \xe9t\xe9\r\n".encode("latin-1") + b"\xc3\xa9\r\n"
    T.check(send_message(d, ["eight@localhost"], eight) == 250, "8-bit bytes without BODY=8BITMIME accepted")
    got = delivered(d, "eightbit")
    T.check(len(got) == 1 and b"caf\xe9 \xe9t\xe9\n\xc3\xa9" in got[0].replace(b"\r\n", b"\n"), "8-bit bytes delivered unchanged")

    for name, bare in (("barelf", b"one\ntwo\r\n"), ("barecr", b"one\rtwo\r\n")):
        code = send_message(d, ["bare@localhost"], msg(name, body="") + bare)
        T.check(code == 550, f"{name}: refused with 550 (documented rule: refuse, never normalise)", str(code))
    T.check(len(delivered(d, "barelf", 0.3)) + len(delivered(d, "barecr", 0.3)) == 0, "bare LF/CR messages not delivered")


def g4_smuggling(d):
    """Each variant twice: in one write, and with the variant sent a byte per TCP segment
    (a server that frames lines per read could be fooled by one and not the other)."""
    variants = [(v, False) for v in SMUGGLE] + [(v, True) for v in SMUGGLE]
    for i, (variant, split) in enumerate(variants):
        label = repr(variant) + (" split" if split else "")
        first = f"smug-{i}-first"
        second = f"smug-{i}-second"
        c = session(d)
        c.cmd("MAIL FROM:<a@x.test>")
        c.cmd("RCPT TO:<smuggle@localhost>")
        c.cmd("DATA")
        after = (
            f"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim{i}@localhost>\r\nDATA\r\n".encode()
            + msg(second, body="smuggled body\r\n")
            + b"\r\n.\r\n"
        )
        if split:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(msg(first, body="first body"))
            for b in variant:
                time.sleep(0.02)
                c.send(bytes([b]))
            time.sleep(0.02)
            c.send(after)
        else:
            c.send(msg(first, body="first body") + variant + after)
        code, text = c.reply()
        T.check(code in (250, 550), f"smuggling {label}: one final reply ({code} {text[0][:40]})")
        T.check(c.quiet(0.3), f"smuggling {label}: no reply to the smuggled MAIL/RCPT/DATA")
        T.check(c.code("NOOP") == 250, f"smuggling {label}: the session is back in command state")
        c.cmd("QUIT")
        c.close()
    # Deliveries happen right after acceptance; give them a moment, then search.
    time.sleep(1.0)
    d.wait_queue_empty(10)
    ids = all_ids(d)
    for i, (variant, split) in enumerate(variants):
        variant = repr(variant) + (" split" if split else "")
        second = f"<smug-{i}-second@edge.test>"
        T.check(second not in ids, f"smuggling {variant}: the smuggled message is never delivered")
        T.check(not d.files(f"victim{i}"), f"smuggling {variant}: the smuggled recipient has no mail")
        n_first = ids.count(f"<smug-{i}-first@edge.test>")
        T.check(n_first <= 1, f"smuggling {variant}: the carrier is delivered at most once ({n_first})")
    # The real end of data split over segments still ends the message.
    c = session(d)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<splitend@localhost>")
    c.cmd("DATA")
    c.send(msg("splitend", body="text"))
    for b in b"\r\n.\r\n":
        time.sleep(0.02)
        c.send(bytes([b]))
    T.check(c.reply()[0] == 250, "CRLF.CRLF sent a byte per segment ends DATA")
    c.close()
    T.check(len(delivered(d, "splitend")) == 1, "... and the message is delivered")


# ---- 5. extensions -----------------------------------------------------------------------


def g5_pipelining(d):
    c = connect(d)
    code, ehlo = c.ehlo()
    T.check("PIPELINING" in ehlo, "EHLO advertises PIPELINING")
    c.send(
        "MAIL FROM:<p@x.test>\r\nRCPT TO:<pipe1@localhost>\r\nRCPT TO:<nobody@example.test>\r\n"
        "RCPT TO:<pipe2@localhost>\r\nDATA\r\n"
    )
    codes = [c.reply()[0] for _ in range(5)]
    T.check(codes == [250, 250, 550, 250, 354], "pipelined MAIL/RCPT x3/DATA: replies in order", str(codes))
    # The message end and the next transaction in one write.
    c.send(
        msg("pipe-a")
        + b"\r\n.\r\nMAIL FROM:<p@x.test>\r\nRCPT TO:<pipe1@localhost>\r\nDATA\r\n"
    )
    codes = [c.reply()[0] for _ in range(4)]
    T.check(codes == [250, 250, 250, 354], "end of data pipelined with the next transaction", str(codes))
    c.send(msg("pipe-b") + b"\r\n.\r\n")
    T.check(c.reply()[0] == 250, "second pipelined message accepted")
    c.send("MAIL FROM:<p@x.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<nobody2@example.test>\r\nDATA\r\n")
    codes = [c.reply()[0] for _ in range(4)]
    T.check(
        codes[:3] == [250, 550, 550] and codes[3] in (503, 554),
        "pipelined group without a valid RCPT: DATA refused",
        str(codes),
    )
    T.check(c.code("NOOP") == 250, "... and the session is not in DATA")
    c.close()
    T.check(len(delivered(d, "pipe-a", count=2)) == 2, "pipe-a delivered to both accepted recipients")
    T.check(len(delivered(d, "pipe-b")) == 1, "pipe-b delivered once")


def g5_extensions(d):
    c = connect(d)
    _, ehlo = c.ehlo()
    for ext in ("8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN", "ENHANCEDSTATUSCODES"):
        T.check(ext in ehlo, f"EHLO advertises {ext}")
    T.check("STARTTLS" not in ehlo, "STARTTLS not advertised without a certificate")
    code, text = c.cmd("STARTTLS")
    T.check(code in (502, 454), "STARTTLS without a certificate: refused", f"{code} {text}")

    # 8BITMIME
    c.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME")
    c.cmd("RCPT TO:<eightmime@localhost>")
    c.cmd("DATA")
    c.send(msg("8bitmime", body="") + b"gr\xc3\xbc\xc3\x9fe\r\n.\r\n")
    T.check(c.reply()[0] == 250, "BODY=8BITMIME message accepted")
    # SMTPUTF8
    c.cmd("MAIL FROM:<a@x.test>")
    code, text = c.cmd("RCPT TO:<pel\u00e9@localhost>")
    T.check(code == 553, "UTF-8 address without SMTPUTF8: 553", f"{code} {text}")
    c.cmd("RSET")
    T.check(c.code("MAIL FROM:<\u00e4@x.test> SMTPUTF8") == 250, "MAIL with SMTPUTF8 and a UTF-8 sender: 250")
    T.check(c.code("RCPT TO:<pel\u00e9@localhost>") == 250, "UTF-8 local part with SMTPUTF8: 250")
    c.cmd("DATA")
    c.send(msg("utf8", body="ol\u00e1\r\n") + b"\r\n.\r\n")
    T.check(c.reply()[0] == 250, "SMTPUTF8 message accepted")
    # DSN parameters; the success notice goes to a local sender.
    T.check(c.code("MAIL FROM:<dsnback@localhost> RET=HDRS ENVID=edge-envid-1") == 250, "MAIL RET=/ENVID=: 250")
    T.check(
        c.code("RCPT TO:<dsn@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;dsn@localhost") == 250,
        "RCPT NOTIFY=/ORCPT=: 250",
    )
    c.cmd("DATA")
    c.send(msg("dsn") + b"\r\n.\r\n")
    T.check(c.reply()[0] == 250, "DSN-parameter message accepted")
    # DATA after BODY=BINARYMIME is refused (BDAT only).
    c.cmd("MAIL FROM:<a@x.test> BODY=BINARYMIME")
    c.cmd("RCPT TO:<bin@localhost>")
    T.check(c.code("DATA") == 503, "DATA after BODY=BINARYMIME: 503")
    c.cmd("RSET")
    c.close()
    got = delivered(d, "8bitmime")
    T.check(len(got) == 1 and b"gr\xc3\xbc\xc3\x9fe" in got[0], "8BITMIME body delivered byte for byte")
    T.check(len(d.wait_files(1, "pel\u00e9", timeout=5)) == 1, "SMTPUTF8 message in mail/pel\u00e9/Maildir")
    T.check(len(delivered(d, "dsn")) == 1, "DSN-parameter message delivered")
    notices = d.wait_files(1, "dsnback", timeout=10)
    text = b"".join(open(p, "rb").read() for p in notices)
    T.check(len(notices) == 1 and b"edge-envid-1" in text, "a success DSN (NOTIFY=SUCCESS) carries the ENVID", repr(text[:200]))


def g5_bdat(d):
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<bdat@localhost>")
    part1 = msg("bdat-1", body="first chunk\r\n")
    part2 = b"second chunk\r\n"
    c.send(f"BDAT {len(part1)}\r\n".encode() + part1)
    code, text = c.reply()
    T.check(code == 250 and str(len(part1)) in text[0], "BDAT chunk: 250 n octets received", f"{code} {text}")
    c.send(f"BDAT {len(part2)} LAST\r\n".encode() + part2)
    T.check(c.reply()[0] == 250, "BDAT LAST: 250 queued")
    # BDAT 0 LAST ends a message sent in earlier chunks; chunks pipelined in one write.
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<bdat@localhost>")
    part = msg("bdat-2", body="only chunk\r\n")
    c.send(f"BDAT {len(part)}\r\n".encode() + part + b"BDAT 0 LAST\r\n")
    codes = [c.reply()[0], c.reply()[0]]
    T.check(codes == [250, 250], "BDAT n then BDAT 0 LAST (pipelined): 250 250", str(codes))
    # BINARYMIME: bytes pass unchanged.
    c.cmd("MAIL FROM:<a@x.test> BODY=BINARYMIME")
    c.cmd("RCPT TO:<bdat@localhost>")
    binary = msg("bdat-bin", body="") + b"\x00\x01bin\nary\r.\r\n.\r\nend\r\n"
    c.send(f"BDAT {len(binary)} LAST\r\n".encode() + binary)
    T.check(c.reply()[0] == 250, "BINARYMIME BDAT with NUL, bare LF and CRLF.CRLF inside: 250")
    # Bare LF in a non-binary chunk: refused, and the transaction is over.
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<bdat@localhost>")
    bad = msg("bdat-bare", body="") + b"bare\nlf\r\n"
    c.send(f"BDAT {len(bad)}\r\n".encode() + bad)
    code, text = c.reply()
    T.check(code == 550 and text[0].startswith("5.6.0"), "BDAT chunk with a bare LF: 550 5.6.0", f"{code} {text}")
    c.send(b"BDAT 4 LAST\r\nabc\n")
    code, _ = c.reply()
    T.check(code == 503, "BDAT after the refused chunk: 503", str(code))
    # Chunks adding up to more than the SIZE limit.
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<bdat@localhost>")
    big = msg("bdat-big", body="") + b"z" * (SIZE_LIMIT // 2) + b"\r\n"
    c.send(f"BDAT {len(big)}\r\n".encode() + big)
    first, _ = c.reply()
    c.send(f"BDAT {len(big)} LAST\r\n".encode() + big)
    code, text = c.reply()
    T.check(first == 250 and code == 552 and text[0].startswith("5.3.4"), "BDAT chunks over the SIZE limit: 552 5.3.4", f"{first} {code} {text}")
    T.check(c.code("NOOP") == 250, "the session goes on after BDAT refusals")
    c.close()
    got = delivered(d, "bdat-1")
    T.check(len(got) == 1 and b"first chunk" in got[0] and b"second chunk" in got[0], "chunked message delivered whole")
    T.check(len(delivered(d, "bdat-2")) == 1, "BDAT 0 LAST message delivered")
    got = delivered(d, "bdat-bin")
    T.check(len(got) == 1 and b"\x00\x01bin" in got[0], "BINARYMIME content delivered with its NUL bytes")
    T.check(len(delivered(d, "bdat-bare", 0.3)) == 0, "refused BDAT message not delivered")
    T.check(len(delivered(d, "bdat-big", 0.3)) == 0, "oversized BDAT message not delivered")


# ---- 6. limits and abuse -----------------------------------------------------------------


def g6_limits(d):
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    codes = [c.code(f"RCPT TO:<r{i}@localhost>") for i in range(100)]
    T.check(codes == [250] * 100, "100 recipients accepted (RFC 5321 minimum)", str(set(codes)))
    code, text = c.cmd("RCPT TO:<r100@localhost>")
    T.check(code == 452 and text[0].startswith("4.5.3"), "101st recipient: 452 4.5.3", f"{code} {text}")
    code, text = c.cmd("RCPT TO:<r101@localhost>")
    T.check(code == 452, "102nd recipient: 452", f"{code} {text}")
    T.check(c.code("RSET") == 250, "RSET after too many recipients")
    code, text = c.cmd("VRFY postmaster")
    T.check(code == 252, "VRFY: 252", f"{code} {text}")
    code, text = c.cmd("EXPN staff")
    T.check(code == 502, "EXPN: 502", f"{code} {text}")
    code, text = c.cmd("HELP")
    T.check(code in (214, 250), "HELP: 214", f"{code} {text}")
    c.close()

    # Messages per connection.
    c = session(d)
    batch = b""
    for i in range(MSGS_PER_CONN):
        batch += b"MAIL FROM:<a@x.test>\r\nRCPT TO:<many@localhost>\r\nDATA\r\n"
        batch += msg(f"many-{i}") + b"\r\n.\r\n"
    c.send(batch)
    codes = [c.reply()[0] for _ in range(4 * MSGS_PER_CONN)]
    T.check(codes == [250, 250, 354, 250] * MSGS_PER_CONN, f"{MSGS_PER_CONN} pipelined messages on one connection", str(codes[:8]))
    code, text = c.cmd("MAIL FROM:<a@x.test>")
    T.check(code == 421 and text[0].startswith("4.7.0"), f"message {MSGS_PER_CONN + 1} on the connection: 421 4.7.0", f"{code} {text}")
    T.check(c.closed(), "closed after the messages-per-connection 421")
    c.close()
    files = d.wait_files(MSGS_PER_CONN, "many")
    T.check(len(files) == MSGS_PER_CONN, f"all {MSGS_PER_CONN} messages delivered once", str(len(files)))

    # Connections per client address.
    held = [connect(d) for _ in range(PER_CLIENT)]
    over = Raw(d.port, greet=False, log=LOG)
    code, text = over.reply()
    T.check(code == 421 and text[0].startswith("4.7.0"), f"connection {PER_CLIENT + 1} from one address: 421 4.7.0", f"{code} {text}")
    T.check(over.closed(), "... and closed")
    over.close()
    for h in held:
        h.close()
    deadline = time.monotonic() + 10
    while True:
        c = Raw(d.port, greet=False, log=[])
        code, _ = c.reply(record=False)
        c.close()
        if code == 220 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    T.check(code == 220, "a new connection is served once the others closed", str(code))


def g6_disconnects(d):
    steps = [
        ("after the greeting", []),
        ("after EHLO", ["EHLO x.example"]),
        ("after MAIL", ["EHLO x.example", "MAIL FROM:<a@x.test>"]),
        ("after RCPT", ["EHLO x.example", "MAIL FROM:<a@x.test>", "RCPT TO:<disc@localhost>"]),
        ("after DATA", ["EHLO x.example", "MAIL FROM:<a@x.test>", "RCPT TO:<disc@localhost>", "DATA"]),
    ]
    for name, cmds in steps:
        c = Raw(d.port, log=[])
        for line in cmds:
            c.cmd(line)
        c.close()
    # In the middle of the content: nothing is delivered.
    c = Raw(d.port, log=[])
    for line in steps[-1][1]:
        c.cmd(line)
    c.send(msg("disc-mid", body="half a message\r\n"))
    time.sleep(0.1)
    c.close()
    # Right after the final dot, without waiting for the reply: delivered at most once.
    c = Raw(d.port, log=[])
    for line in steps[-1][1]:
        c.cmd(line)
    c.send(msg("disc-dot") + b"\r\n.\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    c.close()
    c = connect(d)
    T.check(c.greeting[0] == 220, "the daemon serves on after disconnects in every state")
    c.close()
    T.check(len(delivered(d, "disc-mid", 1.0)) == 0, "a message cut off in DATA is not delivered")
    n = len(delivered(d, "disc-dot", 3.0))
    T.check(n <= 1, f"a message whose client left right after the dot: delivered {n} time(s), at most once")


# ---- 7. reply format ---------------------------------------------------------------------


def g7_format(d):
    c = connect(d)
    c.send("EHLO fmt.example\r\n")
    raw = b""
    while not raw.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + raw:
        raw += c.sock.recv(4096)
    lines = raw.decode().split("\r\n")[:-1]
    T.check(
        all(l.startswith("250-") for l in lines[:-1]) and lines[-1].startswith("250 ") and len(lines) > 1,
        "multi-line EHLO reply: 250-... then 250 ...",
        str(lines),
    )
    c.close()


def lmtp(d):
    c = Raw(d.lmtp_port, log=LOG)
    T.check(c.greeting[0] == 220, "LMTP greeting")
    c.ehlo(verb="LHLO")
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<lmtp1@localhost>")
    c.cmd("RCPT TO:<lmtp2@localhost>")
    c.cmd("DATA")
    c.send(msg("lmtp") + b"\r\n.\r\n")
    codes = [c.reply()[0], c.reply()[0]]
    T.check(codes == [250, 250], "LMTP: one reply per recipient", str(codes))
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<lmtp1@localhost>")
    c.cmd("RCPT TO:<lmtp2@localhost>")
    c.cmd("DATA")
    c.send(msg("lmtp-smug", body="x") + b"\n.\nMAIL FROM:<e@x.test>\r\n" + b"\r\n.\r\n")
    codes = [c.reply()[0], c.reply()[0]]
    T.check(codes == [550, 550] and c.quiet(0.5), "LMTP smuggling (\\n.\\n): refused once per recipient, nothing more", str(codes))
    # A refused recipient in the middle: replies only for the accepted ones, in order.
    c.cmd("MAIL FROM:<a@x.test>")
    codes = [c.code("RCPT TO:<lmtp1@localhost>"), c.code("RCPT TO:<nobody@example.test>"), c.code("RCPT TO:<lmtp3@localhost>")]
    c.cmd("DATA")
    c.send(msg("lmtp-part") + b"\r\n.\r\n")
    finals = [c.reply()[0], c.reply()[0]]
    T.check(codes == [250, 550, 250] and finals == [250, 250] and c.quiet(0.3), "LMTP: one reply per accepted recipient only", f"{codes} {finals}")
    # BDAT over LMTP: per-recipient replies after LAST.
    c.cmd("MAIL FROM:<a@x.test>")
    c.cmd("RCPT TO:<lmtp1@localhost>")
    c.cmd("RCPT TO:<lmtp3@localhost>")
    part = msg("lmtp-bdat")
    c.send(f"BDAT {len(part)} LAST\r\n".encode() + part)
    finals = [c.reply()[0], c.reply()[0]]
    T.check(finals == [250, 250] and c.quiet(0.3), "LMTP BDAT LAST: one reply per recipient", str(finals))
    c.close()
    T.check(len(delivered(d, "lmtp", count=2)) == 2, "LMTP message delivered to both recipients")
    T.check(len(delivered(d, "lmtp-part", count=2)) == 2, "LMTP partial message delivered to the two accepted recipients")
    T.check(len(delivered(d, "lmtp-bdat", count=2)) == 2, "LMTP BDAT message delivered to both recipients")


def smtp_unix_socket(d):
    """smtp.listen accepts unix:/PATH (cursus.toml(5)); the daemon must listen there."""
    ok = os.path.exists(d.smtp_socket)
    T.check(ok, f"SMTP on the configured unix socket {d.smtp_socket}")
    if not ok:
        return
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.smtp_socket)
    f = s.makefile("rwb")
    T.check(f.readline().startswith(b"220"), "unix-socket SMTP greets with 220")
    f.write(b"EHLO unix.example\r\nMAIL FROM:<u@x.test>\r\nRCPT TO:<unixsock@localhost>\r\nDATA\r\n")
    f.flush()
    while f.readline()[3:4] != b" ":
        pass
    codes = [f.readline()[:3] for _ in range(3)]
    f.write(msg("unixsock") + b"\r\n.\r\nQUIT\r\n")
    f.flush()
    codes.append(f.readline()[:3])
    T.check(codes == [b"250", b"250", b"354", b"250"], "a message over unix-socket SMTP", str(codes))
    s.close()
    T.check(len(delivered(d, "unixsock")) == 1, "... delivered")


def sighup(d):
    """SIGHUP (what `systemctl reload` and habit send) must never stop the daemon, with or
    without a TLS certificate to read again."""
    c = session(d)
    os.kill(d.pid(), signal.SIGHUP)
    time.sleep(0.5)
    T.check(d.proc.poll() is None, "cursusd without TLS survives SIGHUP", f"exit {d.proc.returncode}")
    T.check(c.code("NOOP") == 250, "an open session goes on after SIGHUP")
    c.close()


def shutdown_421(d):
    mid = session(d)
    mid.cmd("MAIL FROM:<a@x.test>")
    mid.cmd("RCPT TO:<cutoff@localhost>")
    mid.cmd("DATA")
    mid.send(msg("cutoff", body="half of it\r\n"))
    c = session(d)
    c.cmd("MAIL FROM:<a@x.test>")
    stopper = threading.Thread(target=d.stop)
    stopper.start()
    try:
        code, text = c.reply()
    except (EOFError, OSError) as e:
        code, text = None, [str(e)]
    T.check(code == 421 and text[0].startswith("4.3.2"), "shutdown: an open session gets 421 4.3.2", f"{code} {text}")
    T.check(c.closed(), "... and is closed")
    c.close()
    try:
        code, text = mid.reply()
    except (EOFError, OSError) as e:
        code, text = None, [str(e)]
    T.check(code == 421, "shutdown: a session in the middle of DATA gets 421 too", f"{code} {text}")
    mid.close()
    stopper.join()
    T.check(not d.files("cutoff"), "the message cut off by the shutdown is not delivered")
    T.check(d.proc.returncode == 0, "cursusd exits 0 after SIGTERM", str(d.proc.returncode))
    try:
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    T.check(refused, "no new connections after shutdown")


def main():
    mailboxes = f"@localhost {ME}\nknown@example.test {ME}\n"
    d = harness.Daemon(
        "edge",
        smtp=[
            f"message_size = {SIZE_LIMIT}",
            f"messages_per_connection = {MSGS_PER_CONN}",
            f"max_connections_per_client = {PER_CLIENT}",
        ],
        lmtp=True,
        routing=ROUTING,
        mailboxes=mailboxes,
        smtp_unix=True,
    )
    slow = harness.Daemon("edge-slow", smtp=["greet_pause_ms = 400", "max_connections = 3"])
    ok = False
    try:
        d.start()
        slow.start()
        group(g1_ordering, d, slow)
        for g in (
            rset,
            unknown_recipient,
            duplicate_recipients,
            g2_syntax,
            g3_limits,
            g4_transparency,
            g4_smuggling,
            g5_pipelining,
            g5_extensions,
            g5_bdat,
            g6_limits,
            g6_disconnects,
            g7_format,
            lmtp,
            smtp_unix_socket,
        ):
            group(g, d)
        bad = harness.bad_enhanced(LOG)
        T.check(not bad, f"every one of {len(LOG)} replies carries an enhanced status code of its class", str(bad[:5]))
        group(sighup, d)
        group(shutdown_421, d)
        crashed = "panicked" in d.log_text() or "panicked" in slow.log_text()
        T.check(not crashed, "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
        slow.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
