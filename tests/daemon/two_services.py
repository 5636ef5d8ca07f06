#!/usr/bin/env python3
"""cursusd and cursus-lda as two system services (docs/examples/cursusd.service and
cursus-lda.service): `cursus-lda serve --socket ... --peer cursus` runs as root on its own,
and cursusd, started as root with `[lda] socket = ...` in its file, drops to `cursus` and
meets it on that socket instead of starting an LDA of its own.

Checks:
- cursus-lda's socket is mode 0600 and belongs to the peer it serves (`cursus`);
- cursusd runs as `cursus` and starts no cursus-lda;
- mail to a real user (cursus-ts1) lands in ~/Maildir/new, written as that user, and the
  LDA's own log has the delivery;
- cursus-ts2's .forward, in a 0700 home the daemon cannot enter, is read by cursus-lda over
  the socket (read-forward): a copy kept with `\\cursus-ts2` and one for cursus-ts1;
- a cursus-lda that does not serve the daemon's uid (`--peer` someone else) refuses the
  connection: recipients are deferred (451 at RCPT, with the reason), and the
  refusal is not taken for an unsafe .forward to skip (cursus-ts2's mail is not delivered
  around its .forward).

usage (root): python3 tests/daemon/two_services.py
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Raw  # noqa: E402
from system_mode import children, maildir_new, proc_ids, send  # noqa: E402

T = harness.Tally("two_services")
USERS = ["cursus-ts1", "cursus-ts2"]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def with_message(user_pw, mid, timeout=15):
    """The files in the user's ~/Maildir/new with Message-ID <mid@sys.test>."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for f in maildir_new(user_pw.pw_dir):
            with open(f, "rb") as fh:
                if f"<{mid}@sys.test>".encode() in fh.read():
                    found.append(f)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


ROUTING = """
[routing]
local_domains = ["localhost"]

[[router]]
name = "userforward"
driver = "forward"

[[router]]
name = "localuser"
driver = "localuser"
transport = "local"

[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:~/Maildir"
"""


class Services:
    """One cursus-lda service and one cursusd meeting on its socket."""

    def __init__(self, base, name, peer, routers=True):
        self.base = base
        self.name = name
        self.bindir = os.path.join(base, "bin")
        self.socket = os.path.join(base, f"run-{name}", "lda.sock")
        os.makedirs(os.path.dirname(self.socket))
        os.chmod(os.path.dirname(self.socket), 0o755)
        self.port = harness.free_port()
        self.config = os.path.join(base, f"cursus-{name}.toml")
        self.data = os.path.join(base, f"data-{name}")
        self.lda_log = os.path.join(base, f"lda-{name}.log")
        self.log = os.path.join(base, f"cursusd-{name}.log")
        self.peer = peer
        self.lda = None
        self.daemon = None
        # Without routers: system mode's default routing (aliases, the users' .forward
        # files, local users).
        routing = ROUTING if routers else ""
        write(
            self.config,
            f"""data_dir = "{self.data}"
user = "cursus"

[smtp]
listen = ["127.0.0.1:{self.port}"]

[lda]
socket = "{self.socket}"
connections = 2
{routing}""",
        )

    def start_lda(self, policy):
        log = open(self.lda_log, "wb")
        self.lda = subprocess.Popen(
            [os.path.join(self.bindir, "cursus-lda"), "serve", "--socket", self.socket, "--peer", self.peer, "--policy", policy],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=ENV, cwd=self.base, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not os.path.exists(self.socket) and self.lda.poll() is None:
            time.sleep(0.05)
        return os.path.exists(self.socket)

    def start_daemon(self):
        log = open(self.log, "wb")
        self.daemon = subprocess.Popen(
            [os.path.join(self.bindir, "cursusd"), "-c", self.config],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=ENV, cwd=self.base,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.daemon.poll() is None:
            if "accepting local submissions" in read(self.log):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        rc = None
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                rc = self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.lda and self.lda.poll() is None:
            # The listener and the connection processes it forked (one process group).
            try:
                os.killpg(self.lda.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.lda.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.lda.pid, signal.SIGKILL)
                self.lda.wait()
        return rc

    def rcpt(self, address):
        c = Raw(self.port)
        c.ehlo()
        c.cmd("MAIL FROM:<someone@x.test>")
        code, text = c.cmd(f"RCPT TO:<{address}>")
        c.cmd("QUIT")
        c.close()
        return code, text


def main():
    harness.need_root("starts cursus-lda and cursusd as root and creates users")
    for b in ("cursusd", "cursus-lda"):
        if not os.path.exists(os.path.join(harness.TARGET, b)):
            T.check(False, f"{b} is built", harness.TARGET)
            return T.done()
    cursus = harness.ensure_user("cursus", system=True, home="/nonexistent")
    users = {u: harness.ensure_user(u) for u in USERS}
    for pw in users.values():
        for sub in ("Maildir", ".forward"):
            p = os.path.join(pw.pw_dir, sub)
            if os.path.islink(p) or os.path.isfile(p):
                os.unlink(p)
            elif os.path.isdir(p):
                shutil.rmtree(p)
    ts1, ts2 = users["cursus-ts1"], users["cursus-ts2"]
    # cursus-ts2: a home only its owner enters, and a .forward the daemon cannot read.
    os.chmod(ts2.pw_dir, 0o700)
    fwd = os.path.join(ts2.pw_dir, ".forward")
    write(fwd, "\\cursus-ts2, cursus-ts1\n", 0o600)
    os.chown(fwd, ts2.pw_uid, ts2.pw_gid)

    base = tempfile.mkdtemp(prefix="cursus-services-", dir="/tmp")
    os.chmod(base, 0o755)
    bindir = os.path.join(base, "bin")
    os.makedirs(bindir)
    os.chmod(bindir, 0o755)
    for b in ("cursusd", "cursus-lda"):
        shutil.copy(os.path.join(harness.TARGET, b), os.path.join(bindir, b))
        os.chmod(os.path.join(bindir, b), 0o755)
    policy = os.path.join(base, "lda-policy.toml")
    write(policy, 'min_uid = 1000\n\n[[allow]]\nname = "home-maildir"\nkind = "maildir"\npath = "~/Maildir"\nsubtree = true\n')

    ok = False
    running = []
    try:
        # 1. A service that serves another uid: nothing may pass, nothing is skipped.
        wrong = Services(base, "wrong-peer", peer="nobody")
        running.append(wrong)
        T.check(wrong.start_lda(policy), "cursus-lda (--peer nobody) listens", read(wrong.lda_log))
        # Let cursusd reach the socket, so that the LDA's own SO_PEERCRED check is what refuses.
        os.chmod(wrong.socket, 0o666)
        T.check(wrong.start_daemon(), "cursusd starts with [lda] socket", read(wrong.log)[-2000:])
        code, text = wrong.rcpt("cursus-ts2@localhost")
        T.check(code == 451, "the LDA refuses the daemon's uid: the .forward user is deferred at RCPT (451)", f"{code} {text}")
        time.sleep(0.5)
        T.check(not maildir_new(ts2.pw_dir), "the refusal is not read as an unsafe .forward to skip: nothing delivered around it")
        T.check(any("refused the connection" in t for t in text), "the 451 reply says the LDA refused the connection", str(text))
        T.check("refused a connection from uid" in read(wrong.lda_log), "cursus-lda logs the refused peer", read(wrong.lda_log)[-800:])
        wrong.stop()
        running.remove(wrong)

        # 2. The two services as documented.
        svc = Services(base, "right", peer="cursus")
        running.append(svc)
        T.check(svc.start_lda(policy), "cursus-lda serve --socket --peer cursus listens", read(svc.lda_log))
        st = os.stat(svc.socket)
        T.check(st.st_mode & 0o777 == 0o600 and st.st_uid == cursus.pw_uid, f"the LDA's socket is 0600 and belongs to cursus ({oct(st.st_mode & 0o777)}, uid {st.st_uid})")
        if not T.check(svc.start_daemon(), "cursusd started as root with [lda] socket is running", read(svc.log)[-2000:]):
            return T.done()
        uids, gids, _, _ = proc_ids(svc.daemon.pid)
        T.check(uids == [cursus.pw_uid] * 4 and gids == [cursus.pw_gid] * 4, "cursusd dropped to the cursus user", f"{uids} {gids}")
        spawned = [p for p in children(svc.daemon.pid) if proc_ids(p)[3] == "cursus-lda"]
        T.check(not spawned, "cursusd started no cursus-lda of its own", str(spawned))

        codes, final = send(svc.port, "someone@x.test", ["cursus-ts1@localhost"], "service")
        T.check(codes == [250] and final == 250, "mail to a real user accepted", f"{codes} {final}")
        got = with_message(ts1, "service")
        T.check(len(got) == 1, "delivered to cursus-ts1's ~/Maildir/new through the LDA's socket", str(got))
        for f in got:
            s = os.stat(f)
            T.check(s.st_uid == ts1.pw_uid and s.st_gid == ts1.pw_gid, "the file is owned by cursus-ts1")
        T.check("deliver user=cursus-ts1" in read(svc.lda_log) and "status=sent" in read(svc.lda_log), "the LDA service logged the delivery", read(svc.lda_log)[-800:])

        codes, final = send(svc.port, "someone@x.test", ["cursus-ts2@localhost"], "forwarded")
        T.check(codes == [250] and final == 250, "the .forward user accepted (read-forward over the socket at RCPT)", f"{codes} {final}")
        kept = with_message(ts2, "forwarded")
        T.check(len(kept) == 1 and os.stat(kept[0]).st_uid == ts2.pw_uid, "\\cursus-ts2: a copy kept in the 0700 home, owned by cursus-ts2", str(kept))
        onward = with_message(ts1, "forwarded")
        T.check(len(onward) == 1 and os.stat(onward[0]).st_uid == ts1.pw_uid, "forwarded to cursus-ts1, owned by cursus-ts1", str(onward))

        rc = svc.stop()
        running.remove(svc)
        T.check(rc == 0, "cursusd stops cleanly on SIGTERM", str(rc))

        # 3. No routers in the file: system mode's defaults honour the users' .forward
        # (read through cursus-lda when the message is delivered).
        plain = Services(base, "defaults", peer="cursus", routers=False)
        running.append(plain)
        T.check(plain.start_lda(policy), "cursus-lda for the default routing listens", read(plain.lda_log))
        if T.check(plain.start_daemon(), "cursusd with the default routing is running", read(plain.log)[-2000:]):
            codes, final = send(plain.port, "someone@x.test", ["cursus-ts2@localhost"], "defaults")
            T.check(codes == [250] and final == 250, "default routing: the .forward user accepted", f"{codes} {final}")
            kept = with_message(ts2, "defaults")
            T.check(len(kept) == 1, "default routing: \\cursus-ts2 in the .forward keeps a copy", str(kept))
            onward = with_message(ts1, "defaults")
            T.check(len(onward) == 1 and os.stat(onward[0]).st_uid == ts1.pw_uid, "default routing: the .forward's other user got a copy, owned by cursus-ts1", str(onward))
        plain.stop()
        running.remove(plain)
        for s in (svc, wrong, plain):
            T.check("panicked" not in read(s.log) + read(s.lda_log), f"no panic in the logs ({s.name})")
        ok = not T.failed
    finally:
        for s in running:
            s.stop()
        try:
            os.unlink(fwd)
        except OSError:
            pass
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"note: kept {base}")
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
