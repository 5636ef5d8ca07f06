#!/usr/bin/env python3
"""Concurrent deliveries into one Maildir, one mbox and one MH folder at once.

usage: concurrency.py CURSUS_DELIVER [WORKERS] [MESSAGES_PER_WORKER]

WORKERS deliverers per mailbox (default 8), each delivering MESSAGES_PER_WORKER messages
(default 500), all three mailboxes at the same time. Then every message must be present
exactly once and byte-identical (apart from the trace headers and, for mbox, the mboxrd
quoting), checked here and by independent readers: Python's mailbox module through
../shared/tools/validate_{maildir,mbox}.py and Dovecot's IMAP server (validate_imap.py)
when /usr/lib/dovecot/imap exists. Run as root, deliveries run as the test user cursus-t1
(started as root with -d, so the credential drop is exercised 3 x WORKERS x N times).
Prints one PASS/FAIL line per check and "N passed, M failed".
"""
import concurrent.futures as cf
import mailbox
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

BIN = os.path.abspath(sys.argv[1])
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
PER = int(sys.argv[3]) if len(sys.argv) > 3 else 500
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "..", "shared", "tools")
USER = "cursus-t1"


def message(worker, i):
    # Varied content: a From_ line to quote, 8-bit text, CRLF input, different sizes.
    body = "".join(f"line {k} of message {worker}/{i}\r\n" for k in range((worker * 7 + i) % 40))
    return (
        f"From: w{worker}@example.org\r\nTo: joe@example.net\r\n"
        f"Subject: message {worker}/{i} \xe2\x82\xac\r\nX-Seq: {worker}-{i}\r\n"
        f"Message-ID: <{worker}.{i}@example.org>\r\n\r\n"
        f"From the body of {worker}/{i}\r\n>From quoted already\r\n{body}"
    ).encode("utf-8", "surrogateescape")


def expected(worker, i):
    return message(worker, i).replace(b"\r\n", b"\n")


def main():
    root = os.geteuid() == 0
    work = tempfile.mkdtemp(prefix="cursus-concurrency-")
    base = ["-c", os.path.join(work, "empty.toml"), "-f", "sender@example.org", "-r", "joe@example.net"]
    open(os.path.join(work, "empty.toml"), "w").close()
    if root:
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", USER], check=True)
        pw = pwd.getpwnam(USER)
        os.chown(work, pw.pw_uid, pw.pw_gid)
        base = ["-d", USER] + base
    os.chmod(work, 0o755)
    targets = {
        "maildir": ["--maildir", os.path.join(work, "Maildir")],
        "mbox": ["--mbox", os.path.join(work, "mbox")],
        "mh": ["--mh", os.path.join(work, "mh")],
    }
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": work}
    if not root:
        env["HOME"] = work

    def worker(kind, w):
        failures = []
        for i in range(PER):
            p = subprocess.run([BIN] + base + targets[kind], input=message(w, i), env=env,
                               capture_output=True)
            if p.returncode != 0:
                failures.append(f"{kind} {w}/{i}: exit {p.returncode} {p.stderr[:200]!r}")
        return failures

    with cf.ThreadPoolExecutor(max_workers=3 * WORKERS) as pool:
        futures = [pool.submit(worker, k, w) for k in targets for w in range(WORKERS)]
        failures = [f for fut in futures for f in fut.result()]

    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
        if ok:
            passed += 1
        else:
            failed += 1

    total = WORKERS * PER
    check(f"{3 * total} deliveries exited 0", not failures, "; ".join(failures[:5]))
    prefix = b"Return-Path: <sender@example.org>\nDelivered-To: joe@example.net\n"
    want = {f"{w}-{i}": expected(w, i) for w in range(WORKERS) for i in range(PER)}

    def compare(kind, stored):
        seen, bad = {}, []
        for raw in stored:
            seq = next((l[7:].decode() for l in raw.split(b"\n") if l.startswith(b"X-Seq: ")), None)
            seen[seq] = seen.get(seq, 0) + 1
            if not raw.startswith(prefix) or raw[len(prefix):] != want.get(seq):
                bad.append(seq)
        dup = [k for k, n in seen.items() if n > 1]
        missing = [k for k in want if k not in seen]
        check(f"{kind}: {len(stored)} messages, each exactly once and byte-identical",
              not bad and not dup and not missing and len(stored) == total,
              f"bad={bad[:3]} dup={dup[:3]} missing={missing[:3]} count={len(stored)}")

    md = os.path.join(work, "Maildir")
    compare("maildir", [open(os.path.join(md, "new", n), "rb").read() for n in os.listdir(os.path.join(md, "new"))])
    mh = os.path.join(work, "mh")
    compare("mh", [open(os.path.join(mh, n), "rb").read() for n in os.listdir(mh) if n.isdigit()])
    numbers = sorted(int(n) for n in os.listdir(mh) if n.isdigit())
    check("mh: numbers 1..N without gaps", numbers == list(range(1, total + 1)), f"{numbers[:5]}..{numbers[-5:]}")
    seqs = open(os.path.join(mh, ".mh_sequences")).read()
    check("mh: .mh_sequences lists every message unseen", f"unseen: 1-{total}" in seqs, seqs[:200])

    # mbox: split on From_ lines, undo one level of mboxrd quoting, drop the From_ line and
    # the blank line that separates messages.
    data = open(os.path.join(work, "mbox"), "rb").read()
    chunks = data.split(b"\n\nFrom ")
    msgs = []
    for n, c in enumerate(chunks):
        c = (c if n == 0 else b"From " + c)
        c = c.split(b"\n", 1)[1]
        if n == len(chunks) - 1:
            c = c[:-1] if c.endswith(b"\n\n") else c
        else:
            c = c + b"\n"
        lines = c.split(b"\n")
        lines = [l[1:] if l.startswith(b">") and l.lstrip(b">").startswith(b"From ") else l for l in lines]
        msgs.append(b"\n".join(lines))
    compare("mbox", msgs)

    for tool, path in (("validate_maildir.py", md), ("validate_mbox.py", os.path.join(work, "mbox"))):
        p = subprocess.run([sys.executable, os.path.join(TOOLS, tool), path, str(total)], capture_output=True, text=True)
        check(f"{tool}: {p.stdout.strip().splitlines()[0] if p.stdout.strip() else p.stderr[-200:]}", p.returncode == 0, p.stdout[-400:])
    pm = mailbox.MH(mh, create=False)
    check("python mailbox.MH reads every message", len(pm.keys()) == total, str(len(pm.keys())))
    if os.path.exists("/usr/lib/dovecot/imap"):
        copy = tempfile.mkdtemp(prefix="cursus-imap-")
        shutil.copytree(md, os.path.join(copy, "Maildir"))
        cmd = [sys.executable, os.path.join(TOOLS, "validate_imap.py"), os.path.join(copy, "Maildir"), str(total)]
        if root:
            # The test user may not be able to run root's interpreter (e.g. under ~root).
            os.chmod(copy, 0o755)
            cmd[0] = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else cmd[0]
            # Dovecot 2.3 takes validate_imap.py's CONTROL=MEMORY as a directory relative
            # to HOME; when MEMORY/.INBOX does not exist yet, the first sync fails and
            # shows 0 messages. A fresh HOME with it made keeps runs independent.
            home = os.path.join(copy, "home")
            os.makedirs(os.path.join(home, "MEMORY", ".INBOX"))
            # Dovecot refuses to open mail as root: read the copy as its owner.
            for dirpath, dirnames, filenames in os.walk(copy):
                for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
                    os.chown(n, pw.pw_uid, pw.pw_gid)
            cmd = ["runuser", "-u", USER, "--", "env", f"USER={USER}", f"HOME={home}"] + cmd
        else:
            home = os.path.join(copy, "home")
            os.makedirs(os.path.join(home, "MEMORY", ".INBOX"))
            cmd = ["env", f"HOME={home}"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True)
        check(f"validate_imap.py (Dovecot IMAP): {p.stdout.strip()}", p.returncode == 0, p.stderr[-300:])
        shutil.rmtree(copy, ignore_errors=True)
    else:
        print("SKIP validate_imap.py: /usr/lib/dovecot/imap not installed")
    shutil.rmtree(work, ignore_errors=True)
    print(f"concurrency: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
