#!/usr/bin/env python3
"""Large messages: cursusd writes the content to the queue as it arrives, never holding a
whole message in memory.

With message_size = 200 MiB:
1. 100 MB by DATA and 100 MB by BDAT (1 MiB chunks): 250 each, delivered byte for byte
   (SHA-256), and the daemon's resident memory (VmRSS in /proc/PID/status, sampled while
   the content streams) stays under its baseline + 16 MiB (holding the message grew it by
   well over 100 MiB); the queue file grows while the content is still on its way;
2. a client that hangs up half-way through a large message leaves no .msg, .jnl or tmp/
   file behind;
3. a message one octet over the limit gets 552 5.3.4 and leaves nothing behind;
4. a large local submission (SMTP on the unix socket) without Date and Message-ID gets
   them added in front of its header, the rest byte for byte.

usage: python3 tests/daemon/big_message.py
"""

import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Raw  # noqa: E402

T = harness.Tally("big_message")

MIB = 1 << 20
LIMIT = 200 * MIB
BIG = 100 * 1000 * 1000
# The most the daemon's resident memory may grow while a large message streams in.
MARGIN = 16 * MIB


def rss(pid):
    """VmRSS of `pid` in octets (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """Samples a process's VmRSS every 10 ms in a thread; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0, True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def message(mid, size):
    """A message of exactly `size` octets (CRLF lines, none starting with a dot)."""
    head = f"Message-ID: <{mid}@big.test>\r\nSubject: {mid}\r\n\r\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ....\r\n"
    block = line * (MIB // len(line))
    body = bytearray(head)
    while len(body) + len(block) <= size - 2:
        body += block
    body += b"x" * (size - 2 - len(body)) + b"\r\n"
    return bytes(body)


def queue_files(d):
    """Messages, journals and tmp/ files in the queue (spares are no one's message)."""
    out = []
    for root, _, files in os.walk(os.path.join(d.data, "queue")):
        for f in files:
            if f.endswith((".msg", ".jnl")) or os.path.basename(root) == "tmp":
                out.append(os.path.join(root, f))
    return out


def wait_no_queue_files(d, timeout=10):
    deadline = time.monotonic() + timeout
    while queue_files(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    return queue_files(d)


def delivered(d, mid, timeout=60):
    """The delivered copy of `mid` (the whole Maildir file), or None."""
    deadline = time.monotonic() + timeout
    tag = f"<{mid}@big.test>".encode()
    while time.monotonic() < deadline:
        for path in d.files("big"):
            with open(path, "rb") as f:
                head = f.read(4096)
            if tag in head:
                # The delivery agent writes to tmp/ and renames: a file in new/ is whole.
                with open(path, "rb") as f:
                    return f.read()
        time.sleep(0.1)
    return None


def check_delivered(d, mid, msg, how):
    got = delivered(d, mid)
    # The Maildir copy has LF line ends.
    msg = msg.replace(b"\r\n", b"\n")
    ok = got is not None and got.endswith(msg)
    T.check(
        ok and hashlib.sha256(got[-len(msg):]).hexdigest() == hashlib.sha256(msg).hexdigest(),
        f"{how}: delivered byte for byte (SHA-256 of {len(msg)} octets)",
        "not delivered" if got is None else f"{len(got)} octets delivered",
    )


def growing_msg_file(d):
    """Size of the largest file in the queue (a message being written may be a reused
    spare, `<ID>.{msg,jnl}.spare`, until its commit)."""
    sizes = []
    for root, _, files in os.walk(os.path.join(d.data, "queue")):
        for f in files:
            try:
                sizes.append(os.path.getsize(os.path.join(root, f)))
            except OSError:
                pass
    return max(sizes, default=0)


def send_data(c, msg, d=None):
    """DATA with `msg`; returns (the reply, the largest queue file seen half-way)."""
    assert c.code("DATA") == 354
    half = len(msg) // 2
    c.send(msg[:half])
    seen = growing_msg_file(d) if d else 0
    c.send(msg[half:] + b".\r\n")
    return c.reply(), seen


def send_bdat(c, msg):
    chunks = [msg[i:i + MIB] for i in range(0, len(msg), MIB)]
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        c.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
        code, text = c.reply()
        if code != 250 or last:
            return code, text
    return 0, []


def main():
    d = harness.Daemon("bigmsg", smtp=[f"message_size = {LIMIT}"], smtp_unix=True)
    ok = False
    try:
        d.start()
        pid = d.pid()
        c = Raw(d.port, timeout=60)
        c.ehlo()
        # A small message first, so that the baseline includes a delivery's worth of
        # allocations.
        small = message("small", 4000)
        c.cmd("MAIL FROM:<a@x.test>")
        c.cmd("RCPT TO:<big@localhost>")
        (code, text), _ = send_data(c, small)
        T.check(code == 250, "a small message: 250", f"{code} {text}")
        check_delivered(d, "small", small, "the small message")
        time.sleep(0.3)
        baseline = rss(pid)
        print(f"baseline VmRSS of cursusd: {baseline / MIB:.1f} MiB", flush=True)

        # 1. 100 MB by DATA, then by BDAT.
        msg = message("data", BIG)
        sampler = Sampler(pid)
        started = time.monotonic()
        c.cmd(f"MAIL FROM:<a@x.test> SIZE={len(msg)}")
        c.cmd("RCPT TO:<big@localhost>")
        (code, text), seen = send_data(c, msg, d)
        secs = time.monotonic() - started
        T.check(code == 250, f"100 MB by DATA: 250 ({secs:.1f} s)", f"{code} {text}")
        T.check(seen > 10 * MIB, "... the queue file grew while the content was on its way", f"{seen} octets")
        check_delivered(d, "data", msg, "100 MB by DATA")
        msg = message("bdat", BIG)
        c.cmd(f"MAIL FROM:<a@x.test> SIZE={len(msg)}")
        c.cmd("RCPT TO:<big@localhost>")
        code, text = send_bdat(c, msg)
        T.check(code == 250, "100 MB by BDAT in 1 MiB chunks: 250", f"{code} {text}")
        check_delivered(d, "bdat", msg, "100 MB by BDAT")
        peak = sampler.stop()
        grew = peak - baseline
        print(f"peak VmRSS of cursusd: {peak / MIB:.1f} MiB (+{grew / MIB:.1f} MiB)", flush=True)
        T.check(grew < MARGIN, f"cursusd's memory grew by {grew / MIB:.1f} MiB, under {MARGIN // MIB} MiB")
        del msg

        # 2. A client that hangs up half-way leaves nothing.
        h = Raw(d.port, timeout=60)
        h.ehlo()
        h.cmd("MAIL FROM:<a@x.test>")
        h.cmd("RCPT TO:<big@localhost>")
        T.check(h.code("DATA") == 354, "hang-up half-way: DATA")
        h.send(message("hangup", 20 * MIB)[: 10 * MIB])
        deadline = time.monotonic() + 10
        while growing_msg_file(d) < 8 * MIB and time.monotonic() < deadline:
            time.sleep(0.05)
        T.check(growing_msg_file(d) >= 8 * MIB, "... the content reached the queue")
        h.close()
        left = wait_no_queue_files(d)
        T.check(not left, "... after the hang-up no .msg, .jnl or tmp/ file is left", str(left))

        # 3. One octet over the limit: 552, nothing left.
        over = message("over", LIMIT + 1)
        c.cmd("MAIL FROM:<a@x.test>")
        c.cmd("RCPT TO:<big@localhost>")
        (code, text), _ = send_data(c, over)
        T.check(code == 552 and text[0].startswith("5.3.4"), "one octet over message_size: 552 5.3.4", f"{code} {text}")
        del over
        left = wait_no_queue_files(d)
        T.check(not left, "... and nothing is left in the queue", str(left))
        T.check(c.code("NOOP") == 250, "the session goes on")
        c.cmd("QUIT")
        c.close()

        # 4. A large local submission gets its missing fields, the rest as sent.
        body = message("local", 3 * MIB).split(b"\r\n", 1)[1]  # no Message-ID
        body = b"X-Tag: <local@big.test>\r\n" + body
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(d.smtp_socket)
        f = s.makefile("rb")
        replies = []

        def reply():
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            replies.append(lines[-1].decode().strip())
            return int(lines[-1][:3])

        reply()
        for line in (b"EHLO local", b"MAIL FROM:<>", b"RCPT TO:<big@localhost>", b"DATA"):
            s.sendall(line + b"\r\n")
            reply()
        s.sendall(body + b".\r\n")
        code = reply()
        s.sendall(b"QUIT\r\n")
        reply()
        s.close()
        T.check(code == 250, "a 3 MiB local submission: 250", str(replies))
        got = delivered(d, "local")
        header = got.split(b"\n\n", 1)[0] if got else b""
        T.check(
            got is not None
            and got.endswith(body.replace(b"\r\n", b"\n"))
            and b"\nDate: " in header
            and b"\nMessage-ID: <" in header,
            "... delivered with Date and Message-ID added before its own header, the rest as sent",
            header[:600].decode("utf-8", "replace"),
        )

        T.check(d.stop() == 0, "a clean stop")
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
