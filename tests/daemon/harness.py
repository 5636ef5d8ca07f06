"""Shared harness of the cursusd tests (tests/daemon/*.py).

Starts target/debug/cursusd in single-user mode in a temporary data directory (a small
cursus.toml with free ports), as the unprivileged test user `cursus-td` when the tests run
as root (setpriv), waits until it listens, stops it (SIGTERM) or kills it (SIGKILL), and
finds the messages it delivered in the Maildirs under the data directory
(`mail/LOCAL/Maildir/new`).

Also: a raw SMTP client that records every reply (so a test can check the reply format of
a whole conversation), and a small pass/fail/expected-failure tally with the exit status
scripts/test understands (0 passed, 1 failed, 77 skipped).

Only the Python standard library. The temporary directory is removed when the tests pass
and kept (its path printed, with the daemon's log) when one fails.
"""

import collections
import smtplib
import threading
import email
import email.policy
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CURSUS_TARGET", os.path.join(ROOT, "target", "debug"))
TEST_USER = "cursus-td"
IS_ROOT = os.geteuid() == 0

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


# ---- results -----------------------------------------------------------------------------


class Tally:
    """PASS/FAIL/XFAIL lines and the exit status."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []
        self.xfailed = []
        self.started = time.monotonic()

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"PASS: {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL: {what}" + (f": {detail}" if detail else ""), flush=True)
        return cond

    def expect_fail(self, cond, what, reason, detail=""):
        """A known bug: the check still runs; a pass is news (XPASS) and counts as a pass."""
        if cond:
            self.passed += 1
            print(f"XPASS: {what} (expected to fail: {reason}) -- remove the mark", flush=True)
        else:
            self.xfailed.append(what)
            print(f"XFAIL: {what}: {reason}" + (f" [{detail}]" if detail else ""), flush=True)

    def done(self):
        secs = time.monotonic() - self.started
        print(
            f"{self.name}: {self.passed} passed, {len(self.failed)} failed, "
            f"{len(self.xfailed)} expected failures ({secs:.1f} s)",
            flush=True,
        )
        for f in self.failed:
            print(f"  failed: {f}")
        return 1 if self.failed else 0


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(77)


def need_root(what):
    if not IS_ROOT:
        skip(f"needs root ({what})")


# ---- users -------------------------------------------------------------------------------


def ensure_user(name, system=False, home=None):
    """Creates `name` if missing (root only); returns its passwd entry."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    args = ["useradd", "-s", "/usr/sbin/nologin"]
    if system:
        args += ["--system", "-M", "-d", home or "/nonexistent"]
    elif home:
        args += ["-m", "-d", home]
    else:
        args += ["-m"]
    subprocess.run(args + [name], check=True)
    return pwd.getpwnam(name)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user_argv(user):
    """The argv prefix that runs a command as `user` (nothing when not root)."""
    if not IS_ROOT or user is None:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


# ---- the daemon --------------------------------------------------------------------------


class Daemon:
    """One cursusd in single-user mode in its own temporary directory."""

    def __init__(self, name, smtp=None, lmtp=False, routing=None, mailboxes=None, base=None, smtp_unix=False):
        """`smtp`: extra `key = value` lines of [smtp]; `smtp_unix`: also listen for SMTP on
        the unix socket DATA/smtp.sock (`self.smtp_socket`); `routing`: a routing TOML text where
        DATA stands for the data directory (None: the single-user defaults); `mailboxes`: the
        text of DATA/mailboxes (None: cursusd writes its default)."""
        self.name = name
        self.user = TEST_USER if IS_ROOT else None
        if IS_ROOT:
            ensure_user(TEST_USER, system=True)
        self.base = base or tempfile.mkdtemp(prefix=f"cursus-{name}-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.bin = self._binaries()
        self.data = os.path.join(self.base, "data")
        os.makedirs(self.data, exist_ok=True)
        os.chmod(self.data, 0o700)
        self.port = free_port()
        self.lmtp_port = free_port() if lmtp else None
        self.config = os.path.join(self.base, "cursus.toml")
        self.smtp_socket = os.path.join(self.data, "smtp.sock") if smtp_unix else None
        listen = [f'"127.0.0.1:{self.port}"'] + ([f'"unix:{self.smtp_socket}"'] if smtp_unix else [])
        lines = ["[smtp]", f"listen = [{', '.join(listen)}]"]
        lines += list(smtp or [])
        if lmtp:
            lines += ["[lmtp]", f'listen = ["127.0.0.1:{self.lmtp_port}"]']
        text = "\n".join(lines) + "\n"
        if routing:
            text += routing.replace("DATA", self.data)
        self._write(self.config, text, 0o644)
        if mailboxes is not None:
            self._write(os.path.join(self.data, "mailboxes"), mailboxes, 0o644)
        if self.user:
            pw = pwd.getpwnam(self.user)
            for d, _, files in os.walk(self.data):
                os.chown(d, pw.pw_uid, pw.pw_gid)
                for f in files:
                    os.chown(os.path.join(d, f), pw.pw_uid, pw.pw_gid)
        self.log_path = os.path.join(self.base, "cursusd.log")
        self.proc = None
        self.starts = 0

    @staticmethod
    def _write(path, text, mode):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def _binaries(self):
        """As root, links (or copies) the binaries where the test user can run them (the
        checkout may be under a directory only root can enter)."""
        if not IS_ROOT:
            return TARGET
        d = os.path.join(self.base, "bin")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        for b in ("cursusd", "cursus"):
            src, dst = os.path.join(TARGET, b), os.path.join(d, b)
            try:
                os.link(src, dst)  # same file system: no copy of ~50 MB debug binaries
            except OSError:
                shutil.copy(src, dst)
            os.chmod(dst, 0o755)
        return d

    def env(self):
        e = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.data,
            "LANG": "C.UTF-8",
            "CURSUS_DATA_DIR": self.data,
        }
        return e

    def start(self, timeout=20, wait=True):
        """Starts cursusd; with `wait`, returns once it greets on its port and its submission
        socket exists (see `wait_ready`)."""
        argv = as_user_argv(self.user) + [
            os.path.join(self.bin, "cursusd"),
            "-c",
            self.config,
            "-d",
            self.data,
        ]
        log = open(self.log_path, "ab")
        self.starts += 1
        log.write(f"---- start {self.starts} ----\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env(), cwd=self.base
        )
        log.close()
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        sock = os.path.join(self.data, "submit.sock")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cursusd exited with {self.proc.returncode} at start:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    banner = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                if banner.startswith(b"220") and os.path.exists(sock):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cursusd did not listen within {timeout} s:\n{self.log_tail()}")

    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def cleanup(self, keep=False):
        self.stop()
        if keep:
            print(f"note: kept {self.base} (log: {self.log_path}); last log lines:")
            print(self.log_tail())
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # ---- mail delivered ----------------------------------------------------------------

    def maildir(self, local):
        return os.path.join(self.data, "mail", local, "Maildir")

    def files(self, local=None):
        """Paths of delivered messages (new/ and cur/), of one local part or all."""
        base = os.path.join(self.data, "mail")
        locals_ = [local] if local is not None else (os.listdir(base) if os.path.isdir(base) else [])
        out = []
        for lp in locals_:
            for sub in ("new", "cur"):
                d = os.path.join(base, lp, "Maildir", sub)
                if os.path.isdir(d):
                    out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
        return out

    def messages(self, local=None):
        out = []
        for p in self.files(local):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_files(self, count, local=None, timeout=30):
        """Waits until at least `count` messages are delivered; returns the paths."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.files(local)
            if len(files) >= count or time.monotonic() > deadline:
                return files
            time.sleep(0.05)

    def queue_empty(self):
        q = os.path.join(self.data, "queue")
        for d, _, files in os.walk(q):
            for f in files:
                if f.endswith(".jnl") or f.endswith(".msg"):
                    return False
        return True

    def wait_queue_empty(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue_empty():
                return True
            time.sleep(0.1)
        return False


VALIDATOR = os.path.join(ROOT, "..", "shared", "tools", "validate_maildir.py")


class Senders:
    """THREADS senders, each sending messages for `rcpt` with a unique Message-ID
    (`<{tag}-{thread}-{n}@crash.test>`) and an end marker over SMTP until stopped, recording
    which got 250 (`accepted`), which got no final reply (`unknown`) and the refusals."""

    def __init__(self, port, rcpt, tag, threads=4, pause=0.01, filler_lines=40):
        self.port = port
        self.rcpt = rcpt
        self.tag = tag
        self.pause = pause
        self.filler_lines = filler_lines
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted = set()  # got 250
        self.unknown = set()  # sent, no final reply
        self.refused = collections.Counter()
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def run(self, t):
        n = 0
        filler = "".join(f"filler line {i:03d} ......................................................\r\n" for i in range(self.filler_lines))
        while not self.stop.is_set():
            try:
                s = smtplib.SMTP("127.0.0.1", self.port, timeout=20)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                s.ehlo("crash.example")
                while not self.stop.is_set():
                    mid = f"<{self.tag}-{t}-{n}@crash.test>"
                    n += 1
                    body = (
                        f"From: c@x.test\r\nTo: {self.rcpt}\r\nMessage-ID: {mid}\r\nSubject: {mid}\r\n\r\n"
                        f"{filler}END-OF-MESSAGE {mid}\r\n"
                    )
                    code, _ = s.mail("c@x.test")
                    if code != 250:
                        self.refused[code] += 1
                        break
                    code, _ = s.rcpt(self.rcpt)
                    if code != 250:
                        self.refused[code] += 1
                        s.rset()
                        continue
                    with self.lock:
                        self.unknown.add(mid)
                    code, _ = s.data(body)
                    with self.lock:
                        if code == 250:
                            self.unknown.discard(mid)
                            self.accepted.add(mid)
                        else:
                            self.refused[code] += 1
                    time.sleep(self.pause)
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                try:
                    s.close()
                except OSError:
                    pass



def validate_maildir(path, count):
    """Runs the independent Maildir checker (shared/tools/validate_maildir.py: structure,
    unique names, S= sizes, each message parsed without defects); (ok, output), or None
    when the tool is not there."""
    if not os.path.exists(VALIDATOR):
        return None
    p = subprocess.run([sys.executable, VALIDATOR, path, str(count)], capture_output=True, text=True)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def message_ids(blobs):
    """Message-ID header values of each delivered message (first field only)."""
    out = []
    for b in blobs:
        m = email.message_from_bytes(b, policy=email.policy.compat32)
        mid = m.get("Message-ID")
        out.append(mid.strip() if mid else None)
    return out


# ---- a raw SMTP client -------------------------------------------------------------------


class Raw:
    """A line-oriented SMTP client over a plain socket that records every reply."""

    def __init__(self, port, host="127.0.0.1", greet=True, timeout=10, log=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.log = log if log is not None else []
        self.greeting = self.reply(record=False) if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self, record=True):
        """(code, [text lines]) of one complete reply; `record`: keep it for the enhanced
        status code check (not for the greeting and EHLO replies, RFC 2034 §3)."""
        lines = []
        while True:
            line = self._line()
            if len(line) < 3 or not line[:3].isdigit():
                raise ValueError(f"not a reply line: {line!r}")
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                break
            if line[3] != "-":
                raise ValueError(f"bad reply line: {line!r}")
        code = int(lines[0][:3])
        if record:
            self.log.append((code, lines))
        return code, [l[4:] for l in lines]

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def code(self, line):
        return self.cmd(line)[0]

    def ehlo(self, name="client.example", verb="EHLO"):
        self.send(f"{verb} {name}\r\n")
        return self.reply(record=False)

    def quiet(self, wait=0.5):
        """True when the server sends nothing more within `wait` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(10)
        if data:
            self.buf += data
            return False
        return True

    def closed(self, wait=3):
        """True when the server closes the connection (EOF) within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(10)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def bad_enhanced(log):
    """Replies in `log` that lack a well-formed RFC 2034/3463 enhanced status code whose
    class matches the reply's (the greeting, EHLO/HELO/LHLO replies and 3xx are exempt)."""
    bad = []
    for code, lines in log:
        if code // 100 == 3:
            continue
        for line in lines:
            text = line[4:]
            first = text.split(" ", 1)[0]
            m = ENHANCED.match(first)
            if not m or int(m.group(1)) != code // 100:
                bad.append(line)
    return bad
