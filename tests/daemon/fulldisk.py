#!/usr/bin/env python3
"""A full disk under cursusd (root: mounts two small tmpfs).

The data directory (the queue) is one tmpfs and its mail/ directory (the Maildirs) another,
so each can be filled on its own:
1. queue full (queue_min_free = 1 MiB): MAIL with a SIZE that does not fit above the
   reserve, DATA once the disk filled after MAIL, and MAIL on a full disk are answered
   452 4.3.1 before any content is sent; a disk that fills while the content is on its way
   gets 452 4.3.1 at the end of DATA, also when the message is large enough to be written
   to the queue as it arrives (the disk fills in the middle of it); the session stays
   usable, nothing of the refused
   messages is left in the queue, and after the space returns the same message is accepted
   and delivered once;
2. mailboxes full: messages are still accepted (the queue has room), their deliveries are
   deferred, nothing partial appears in new/; after the space returns a queue run
   (SIGUSR1, what `cursus sendmail -q` sends) delivers each exactly once and complete.
The daemon stays up throughout.

usage (root): python3 tests/daemon/fulldisk.py
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Raw  # noqa: E402

T = harness.Tally("fulldisk")


def mount_tmpfs(path, size, uid, gid, mode="0700"):
    os.makedirs(path, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode},uid={uid},gid={gid}", "tmpfs", path],
        check=True,
    )


def fill(path):
    """Writes `path` until the file system is full; returns the bytes written."""
    n = 0
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                n += f.write(block)
        except OSError:
            pass
        try:
            while True:
                n += f.write(b"\0" * 512)
        except OSError:
            pass
    return n


def body(mid, lines=30):
    text = "".join(f"line {i:03d} of {mid} ..........................................\r\n" for i in range(lines))
    return (f"Message-ID: <{mid}@full.test>\r\nSubject: {mid}\r\n\r\n{text}END {mid}\r\n").encode()


def transaction(c, mid, rcpt="full@localhost"):
    """MAIL/RCPT/DATA/content on session `c`; the reply to each step until one fails."""
    replies = []
    for line in ("MAIL FROM:<a@x.test>", f"RCPT TO:<{rcpt}>", "DATA"):
        code, text = c.cmd(line)
        replies.append((code, text[0] if text else ""))
        if code >= 400:
            if line != "DATA":
                c.cmd("RSET")
            return replies
    c.send(body(mid) + b".\r\n")
    code, text = c.reply()
    replies.append((code, text[0] if text else ""))
    return replies


def fill_to(path, keep_free):
    """Writes `path` until the file system at its directory has about `keep_free` octets free."""
    st = os.statvfs(os.path.dirname(path))
    want = st.f_bavail * st.f_frsize - keep_free
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, want))
        f.flush()
        os.fsync(f.fileno())


def ids(d):
    return harness.message_ids(d.messages("full"))


def main():
    harness.need_root("mounts tmpfs file systems")
    pw = harness.ensure_user(harness.TEST_USER, system=True)
    d = harness.Daemon("fulldisk", smtp=["queue_min_free = 1048576"])
    mounted = []
    ok = False
    try:
        mount_tmpfs(d.data, "6m", pw.pw_uid, pw.pw_gid)
        mounted.append(d.data)
        mail = os.path.join(d.data, "mail")
        mount_tmpfs(mail, "1m", pw.pw_uid, pw.pw_gid, mode="0755")
        mounted.append(mail)
        d.start()
        c = Raw(d.port)
        c.ehlo()
        r = transaction(c, "before")
        T.check(r[-1][0] == 250, "a message before the disk fills: 250", str(r))
        T.check(len(d.wait_files(1, "full")) == 1, "... delivered")

        # 1. The queue's file system is full.
        # a. 3 MiB free, 1 MiB reserved: SIZE decides at MAIL.
        filler = os.path.join(d.data, "filler")
        fill_to(filler, 3 * 1024 * 1024)
        code, text = c.cmd("MAIL FROM:<a@x.test> SIZE=1000")
        T.check(code == 250, "3 MiB free, 1 MiB reserved: MAIL SIZE=1000 is accepted", f"{code} {text}")
        c.cmd("RSET")
        code, text = c.cmd("MAIL FROM:<a@x.test> SIZE=4000000")
        T.check(code == 452 and text[0].startswith("4.3.1"), "... MAIL SIZE=4000000 (more than is free above the reserve): 452 4.3.1", f"{code} {text}")
        os.unlink(filler)
        # b. The disk fills between MAIL and DATA: DATA is refused before any content.
        T.check(c.code("MAIL FROM:<a@x.test>") == 250, "MAIL with room")
        n = fill(filler)
        print(f"filled the data directory's tmpfs with {n} bytes", flush=True)
        T.check(c.code("RCPT TO:<full@localhost>") == 250, "... RCPT")
        code, text = c.cmd("DATA")
        T.check(code == 452 and text[0].startswith("4.3.1"), "the disk filled after MAIL: DATA gets 452 4.3.1 (no 354)", f"{code} {text}")
        c.cmd("RSET")
        # c. BDAT likewise, the chunk is read and discarded.
        os.unlink(filler)
        T.check(c.code("MAIL FROM:<a@x.test>") == 250, "MAIL with room (BDAT)")
        fill(filler)
        c.code("RCPT TO:<full@localhost>")
        chunk = body("bdat-refused")
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        code, text = c.reply()
        T.check(code == 452 and text[0].startswith("4.3.1"), "the disk filled after MAIL: BDAT gets 452 4.3.1", f"{code} {text}")
        c.cmd("RSET")
        # d. A full disk: MAIL itself is refused.
        for i in range(3):
            r = transaction(c, "refused")
            code, text = r[-1]
            T.check(
                400 <= code < 500 and harness.ENHANCED.match(text.split(" ", 1)[0] or "") and text.startswith("4."),
                f"queue full, attempt {i + 1}: a 4xx with an enhanced code ({code} {text})",
                str(r),
            )
        T.check(len(r) == 1 and r[-1][0] == 452 and r[-1][1].startswith("4.3.1"), "queue full: MAIL is answered 452 4.3.1", str(r))
        # e. The disk fills while the content is on its way: 452 4.3.1 at the end of DATA.
        os.unlink(filler)
        steps = [c.code("MAIL FROM:<a@x.test>"), c.code("RCPT TO:<full@localhost>"), c.code("DATA")]
        fill(filler)
        c.send(body("refused-late") + b".\r\n")
        code, text = c.reply()
        T.check(
            steps == [250, 250, 354] and code == 452 and text[0].startswith("4.3.1"),
            "the disk filled during DATA: 452 4.3.1 at the end of the message",
            f"{steps} {code} {text}",
        )
        T.check(c.code("NOOP") == 250, "the session stays usable on a full disk")
        # f. A message larger than what cursusd holds in memory (256 KiB) is written to the
        # queue as it arrives; the disk fills in the middle of it: 452 4.3.1 at the end of
        # DATA (the rest of the content is read and thrown away), nothing left behind.
        os.unlink(filler)
        fill_to(filler, 2 * 1024 * 1024)
        steps = [c.code("MAIL FROM:<a@x.test>"), c.code("RCPT TO:<full@localhost>"), c.code("DATA")]
        big = body("refused-big", lines=60000)
        c.send(big + b".\r\n")
        code, text = c.reply()
        T.check(
            steps == [250, 250, 354] and code == 452 and text[0].startswith("4.3.1"),
            f"the disk filled in the middle of a {len(big)}-octet message: 452 4.3.1 at the end of DATA",
            f"{steps} {code} {text}",
        )
        T.check(c.code("NOOP") == 250, "... the session stays usable")
        T.check(d.proc.poll() is None, "cursusd is still running")
        leftovers = []
        for root, _, files in os.walk(os.path.join(d.data, "queue")):
            leftovers += [f for f in files if f.endswith((".msg", ".jnl"))]
        T.check(not leftovers, "nothing of the refused messages is left in the queue", str(leftovers))
        os.unlink(filler)
        r = transaction(c, "refused")
        T.check(r[-1][0] == 250, "space back: the refused message is accepted", str(r))
        d.wait_files(2, "full")
        time.sleep(0.2)
        T.check(ids(d).count("<refused@full.test>") == 1, "... and delivered once")

        # 2. The mailboxes' file system is full: accepted, deferred, delivered later.
        filler = os.path.join(mail, "filler")
        n = fill(filler)
        print(f"filled the mailboxes' tmpfs with {n} bytes", flush=True)
        late = [f"late-{i}" for i in range(3)]
        for mid in late:
            r = transaction(c, mid)
            T.check(r[-1][0] == 250, f"mailboxes full: {mid} still accepted (the queue has room)", str(r))
        deadline = time.monotonic() + 15
        while True:
            deferred = [l for l in d.log_text().splitlines() if "status=deferred" in l and "full@localhost" in l]
            if len(deferred) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        got = ids(d)
        T.check(not any(f"<{m}@full.test>" in got for m in late), "mailboxes full: nothing delivered yet")
        T.check(len(deferred) >= 3, "mailboxes full: the deliveries are deferred (log)", f"{len(deferred)} lines")
        if deferred:
            print("  " + deferred[-1])
        T.check(not d.queue_empty(), "the deferred messages are in the queue")
        os.unlink(filler)
        os.kill(d.pid(), signal.SIGUSR1)
        d.wait_files(2 + len(late), "full", timeout=20)
        T.check(d.wait_queue_empty(20), "space back and a queue run: the queue empties")
        blobs = d.messages("full")
        got = harness.message_ids(blobs)
        for mid in late:
            T.check(got.count(f"<{mid}@full.test>") == 1, f"{mid} delivered exactly once")
        torn = [i for b, i in zip(blobs, got) if i is None or f"END {i[1:].split('@')[0]}".encode() not in b]
        T.check(not torn, f"all {len(blobs)} delivered messages are complete", str(torn))
        tmp = os.listdir(os.path.join(d.maildir("full"), "tmp"))
        T.check(not tmp, "the failed deliveries left nothing in Maildir/tmp", str(tmp))
        c.cmd("QUIT")
        c.close()
        c = Raw(d.port)
        c.ehlo()
        r = transaction(c, "after")
        T.check(r[-1][0] == 250 and len(d.wait_files(6, "full")) == 6, "normal service afterwards", str(r))
        c.close()
        T.check(d.stop() == 0, "a clean stop")
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.stop()
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", m], check=False)
        d.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
