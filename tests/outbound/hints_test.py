#!/usr/bin/env python3
"""The hints database end to end: cursusd (single-user mode) with dnsmasq and the asyncio
sinks of outbound_test.py, checking what the hints change (cursusd's [hints] section).

    usage: python3 tests/outbound/hints_test.py [path/to/cursusd]

Needs dnsmasq (Debian dnsmasq-base); prints SKIP and exits 77 without it. As root, cursusd
runs as `nobody`.

The test zone:
  late.test   MX 10 mx.late.test -> 127.0.0.5  (nothing listens until the test starts a sink)
  hang.test   MX 10 mx.hang.test -> 127.0.0.3  (accepts, never greets)
  old.test    MX 10 mx.old.test  -> 127.0.0.6  (hangs up on EHLO, takes HELO)
  nomx.test   A 127.0.0.7 only                (nothing listens: refused)

Checks:
  1. Host reached -> the others waiting for it start at once: two messages deferred by a
     refused connection are delivered within seconds of a third one reaching the host
     (the retry rule would wait 5 minutes).
  2. Bounce at once after a recent timeout bounce: a message to x@hang.test bounces when
     its retry rule gives up on the timeout; the next message to x@hang.test, under a rule
     that would retry for days, bounces at its first timeout (5.4.7, the sender gets the
     notice); y@hang.test is still deferred.
  3. A host that hung up on EHLO is greeted with HELO next time, and the mail goes.
  4. A domain without MX whose every connection is refused bounces after
     no_mx_refused_lifetime (1s here) at the next attempt (a queue run forced by SIGUSR1).
  5. Over quota (Maildir++ maildirsize) in single-user mode: deferred (4.2.2) while the
     Maildir's cur/ is fresh, bounced (5.2.2, "not been read") once cur/ is 8 days old.
  6. `cursus retry test --hints` shows the timeout bounce.
"""

import asyncio
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outbound_test as ot  # noqa: E402

ROOT = ot.ROOT
CURSUSD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/cursusd")
CURSUS = os.path.join(os.path.dirname(CURSUSD), "cursus")
check = ot.check


class OldSink(ot.PolicySink):
    """Closes the connection on EHLO; HELO and the rest as the policy sink."""

    def __init__(self):
        super().__init__()
        self.ehlo_seen = 0
        self.helo_seen = 0

    async def handle(self, reader, writer):
        writer.write(b"220 old.test SMTP from another age\r\n")
        await writer.drain()
        line = await reader.readline()
        if line.upper().startswith(b"EHLO"):
            with self.lock:
                self.ehlo_seen += 1
            writer.close()
            return
        with self.lock:
            self.helo_seen += 1
        writer.write(b"250 old.test\r\n")
        await writer.drain()
        await self.session(reader, writer, "old")


class Loop:
    """One asyncio loop in a thread; servers can be added while it runs."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def serve(self, handler, host, port):
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(handler, host, port), self.loop)
        return fut.result(10)


def main():
    if not shutil.which("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"):
        print("SKIP: dnsmasq not installed (scripts/install-test-deps.sh)")
        return 77
    if not os.path.exists(CURSUSD):
        print(f"SKIP: {CURSUSD} not built")
        return 77
    tmp = tempfile.mkdtemp(prefix="cursus-hints-")
    os.chmod(tmp, 0o755)
    procs = []
    try:
        dns_port = ot.free_port(("127.0.0.1",))
        sink_port = ot.free_port(("127.0.0.3", "127.0.0.5", "127.0.0.6"))
        cursus_port = ot.free_port(("127.0.0.1",))
        dns = subprocess.Popen([
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "-k", "--conf-file=/dev/null",
            "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
            "--listen-address=127.0.0.1", f"--port={dns_port}",
            "--user=root" if os.geteuid() == 0 else "--user=",
            "--pid-file=", "--log-facility=-", "--local=/test/",
            "--mx-host=late.test,mx.late.test,10", "--host-record=mx.late.test,127.0.0.5",
            "--mx-host=hang.test,mx.hang.test,10", "--host-record=mx.hang.test,127.0.0.3",
            "--mx-host=old.test,mx.old.test,10", "--host-record=mx.old.test,127.0.0.6",
            "--host-record=nomx.test,127.0.0.7",
        ], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "dnsmasq.log"), "w"))
        procs.append(dns)

        loop = Loop()
        hang = ot.PolicySink(hang=True)
        old = OldSink()
        loop.serve(hang.handle, "127.0.0.3", sink_port)
        loop.serve(old.handle, "127.0.0.6", sink_port)

        data = os.path.join(tmp, "data")
        os.makedirs(data)
        with open(os.path.join(tmp, "mailboxes"), "w") as f:
            f.write("@localhost nobody\n")
        config = os.path.join(tmp, "cursus.toml")
        with open(config, "w") as f:
            f.write(f"""hostname = "cursus.test"
data_dir = "{data}"
[smtp]
listen = ["127.0.0.1:{cursus_port}"]
[outbound]
resolver = "127.0.0.1:{dns_port}"
greeting_timeout = 2
connect_timeout = 2
idle_timeout = 10
[hints]
timeout_bounce_memory = "1h"
no_mx_refused_lifetime = "1s"
[routing]
local_domains = ["localhost"]
[[router]]
name = "mailboxes"
driver = "virtual"
table = {{ file = "{tmp}/mailboxes" }}
transport = "local"
[[router]]
name = "dns"
driver = "dnslookup"
domains = ["*.test"]
transport = "smtp"
[[transport]]
name = "local"
driver = "lda"
mailbox = "maildir:{data}/mail/${{local}}/Maildir"
[[transport]]
name = "smtp"
driver = "smtp"
port = {sink_port}
# Mail from first@localhost to hang.test gives up on a timeout after a second.
[[retry]]
pattern = "hang.test"
errors = ["timeout"]
senders = ["first@localhost"]
schedule = "F,1s,1s"
""")
        # A Maildir whose Maildir++ quota (100 bytes) no message fits.
        quota_maildir = os.path.join(data, "mail", "q", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(quota_maildir, sub))
        with open(os.path.join(quota_maildir, "maildirsize"), "w") as f:
            f.write("100S\n0 0\n")
        cmd = [CURSUSD, "-c", config, "-d", data]
        log_path = os.path.join(tmp, "cursusd.log")
        env = dict(os.environ)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            subprocess.run(["chown", "-R", "nobody", tmp], check=True)
            env["HOME"] = tmp
            cmd = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups", "--"] + cmd
        log = open(log_path, "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=env))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cursus_port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            print(open(log_path).read())
            raise SystemExit("cursusd did not start")

        def submit(rcpts, sender="sender@localhost"):
            s = smtplib.SMTP("127.0.0.1", cursus_port, timeout=30)
            s.ehlo("test.client")
            s.mail(sender)
            for r in rcpts:
                code, msg = s.rcpt(r)
                assert code == 250, (r, code, msg)
            code, msg = s.data("Subject: hints\r\n\r\nhello\r\n")
            s.quit()
            m = re.search(r"queued as (\S+)", msg.decode())
            return m.group(1) if m else None

        def log_text():
            return open(log_path).read()

        def wait_for(pattern, timeout=20):
            deadline = time.time() + timeout
            while time.time() < deadline:
                m = re.search(pattern, log_text())
                if m:
                    return m
                time.sleep(0.1)
            return None

        def line_for(qid, rcpt, status=None, timeout=20):
            tail = rf"[^\n]*status={status}[^\n]*" if status else r"[^\n]*"
            return wait_for(rf"{re.escape(qid)}: to=<{re.escape(rcpt)}>, {tail}", timeout)

        def recorded(qid, words, timeout=15):
            """Waits until mailq shows `qid` with `words`: the attempt's outcome is in the
            journal (the log line comes first, and `sendmail -q` skips a message whose
            attempt is still being recorded)."""
            deadline = time.time() + timeout
            while time.time() < deadline:
                out = subprocess.run([CURSUS, "sendmail", "-bp"], capture_output=True, text=True,
                                     env={**os.environ, "CURSUS_DATA_DIR": data}, timeout=30).stdout
                block = out.split(qid, 1)[1].split("\n\n", 1)[0] if qid in out else ""
                if all(w in block for w in words):
                    return True
                time.sleep(0.1)
            return False

        def notice_for(user, words, timeout=15):
            new = os.path.join(data, "mail", user, "Maildir", "new")
            deadline = time.time() + timeout
            while time.time() < deadline:
                for name in os.listdir(new) if os.path.isdir(new) else []:
                    body = open(os.path.join(new, name), "rb").read()
                    if all(w.encode() in body for w in words):
                        return True
                time.sleep(0.2)
            return False

        # 1. Host reached: the others waiting for it start at once.
        qa = submit(["a@late.test"])
        qb = submit(["b@late.test"])
        for q, r in ((qa, "a@late.test"), (qb, "b@late.test")):
            l = line_for(q, r)
            check(l and "status=deferred" in l.group(0) and "refused" in l.group(0).lower(),
                  f"late.test down: {r} deferred (connection refused)")
        late = ot.PolicySink()
        loop.serve(late.handle, "127.0.0.5", sink_port)
        started = time.time()
        qc = submit(["c@late.test"])
        l = line_for(qc, "c@late.test")
        check(l and "status=sent" in l.group(0), "late.test up: the new message is sent")
        a = line_for(qa, "a@late.test", "sent", timeout=15)
        b = line_for(qb, "b@late.test", "sent", timeout=15)
        took = time.time() - started
        check(a and b, f"the two waiting messages are sent at once ({took:.1f}s; the rule "
                       "would wait 5 minutes)")
        check(wait_for(rf"{re.escape(qc)}: reached smtp:mx:late\.test:{sink_port}: "
                       r"starting 2 message", 1),
              "the log names the destination reached and the messages started")
        with late.lock:
            got = sorted(r for t in late.transactions for r in t[2])
        check(got == ["a@late.test", "b@late.test", "c@late.test"],
              f"late sink got each message once ({got})")

        # 2. Bounce at once after a recent timeout bounce.
        q1 = submit(["x@hang.test"], sender="first@localhost")
        check(wait_for(rf"{re.escape(q1)}: removed", 20),
              "x@hang.test: the rule gives up on the timeout, the message is bounced")
        check(notice_for("first", ["x@hang.test", "5.4.7"]),
              "first@localhost got the non-delivery notice")
        q2 = submit(["x@hang.test"], sender="other@localhost")
        qy = submit(["y@hang.test"], sender="other@localhost")
        x = line_for(q2, "x@hang.test")
        check(x and "status=bounced" in x.group(0) and "dsn=5.4.7" in x.group(0)
              and "bounced after timing out" in x.group(0),
              "x@hang.test again: bounced at its first timeout (hints)")
        y = line_for(qy, "y@hang.test")
        check(y and "status=deferred" in y.group(0),
              "y@hang.test (no bounce remembered): deferred as the rule says")
        check(notice_for("other", ["x@hang.test", "bounced after timing out"]),
              "other@localhost got a notice saying why")

        # 3. EHLO refused by hanging up: HELO next time.
        q3 = submit(["x@old.test"])
        l = line_for(q3, "x@old.test")
        check(l and "status=deferred" in l.group(0), "old.test hangs up on EHLO: deferred")
        check(wait_for(r"hints: host=mx\.old\.test failed EHLO", 5),
              "the host's EHLO failure is remembered")
        q4 = submit(["y@old.test"])
        l = line_for(q4, "y@old.test")
        check(l and "status=sent" in l.group(0), "old.test next time: HELO, sent")
        check(line_for(q3, "x@old.test", "sent", timeout=10),
              "and the message that waited for it went at once too")
        with old.lock:
            check(old.ehlo_seen == 1 and old.helo_seen >= 1,
                  f"one EHLO, then HELO (EHLO {old.ehlo_seen}, HELO {old.helo_seen})")

        # 4. No MX, always refused: given up after the shorter lifetime.
        q5 = submit(["x@nomx.test"], sender="owner@localhost")
        l = line_for(q5, "x@nomx.test")
        check(l and "status=deferred" in l.group(0) and "refused" in l.group(0).lower(),
              "nomx.test: the first refusal is deferred")
        time.sleep(1.5)
        procs[-1].send_signal(signal.SIGUSR1)
        l = line_for(q5, "x@nomx.test", "bounced", timeout=15)
        check(l and "dsn=5.4.7" in l.group(0) and "has no MX" in l.group(0),
              "nomx.test: bounced at the next refusal after no_mx_refused_lifetime")

        # 5. Over quota: deferred while read, bounced when not.
        q6 = submit(["q@localhost"], sender="owner@localhost")
        l = line_for(q6, "q@localhost")
        check(l and "status=deferred" in l.group(0) and "dsn=4.2.2" in l.group(0)
              and "being read" in l.group(0),
              "over quota, cur/ fresh: deferred 4.2.2 (the mailbox is being read)")
        check(recorded(q6, ["4.2.2"]), "the deferral is recorded (mailq)")
        old_time = time.time() - 8 * 86400
        os.utime(os.path.join(quota_maildir, "cur"), (old_time, old_time))
        procs[-1].send_signal(signal.SIGUSR1)
        l = line_for(q6, "q@localhost", "bounced", timeout=15)
        check(l and "dsn=5.2.2" in l.group(0) and "not been read for 8d" in l.group(0),
              "over quota, cur/ 8 days old: bounced 5.2.2 (not read)")

        # 6. cursus retry test shows the hint.
        if os.path.exists(CURSUS):
            out = subprocess.run(
                [CURSUS, "retry", "test", "-c", config, "--hints",
                 os.path.join(data, "hints.db"), "x@hang.test", "timeout"],
                capture_output=True, text=True, timeout=30)
            check(out.returncode == 0 and "bounces at once" in out.stdout,
                  "cursus retry test --hints: the timeout bounce is shown")
            if out.returncode != 0 or "bounces at once" not in out.stdout:
                print(out.stdout, out.stderr)
    finally:
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
            except Exception:
                p.kill()
        if ot.failures or os.environ.get("CURSUS_TEST_LOG"):
            print("--- cursusd log ---")
            try:
                print(open(os.path.join(tmp, "cursusd.log")).read()[-8000:])
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    if ot.failures:
        print(f"{len(ot.failures)} check(s) failed")
        return 1
    print("hints: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
