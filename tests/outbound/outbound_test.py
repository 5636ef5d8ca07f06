#!/usr/bin/env python3
"""Outbound delivery end to end: cursusd (single-user mode) routes test domains through the
`dnslookup` router to a real DNS server (dnsmasq on 127.0.0.1, a high port) and delivers
to real peers: Postfix's smtp-sink, and small asyncio SMTP sinks written here that answer
per recipient (250/450/550 by local part), fail after DATA, or never greet.

    usage: python3 tests/outbound/outbound_test.py [path/to/cursusd]

Needs dnsmasq (Debian dnsmasq-base) and smtp-sink (postfix); prints SKIP and exits 77
without them. As root, cursusd runs as `nobody` (single-user mode needs a non-root user).

The test zone (everything under .test):
  sink.test     MX 10 mx.sink.test -> 127.0.0.1       (smtp-sink)
  py.test       MX 10 mx.py.test   -> 127.0.0.2       (policy sink)
  pref.test     MX 10 dead -> 127.0.0.4 (refused), MX 20 mx.py.test (RFC 5321 §5 order)
  nomx.test     A 127.0.0.2 only                      (implicit MX)
  v6.test       AAAA ::1 only                         (policy sink on [::1])
  hang.test     MX 10 -> 127.0.0.3                    (accepts, never greets)
  nullmx.test   MX 0 .                                (RFC 7505: bounce at once, 5.1.10)
  nowhere.test  does not exist                        (NXDOMAIN: bounce, 5.1.2)
  loop.test     MX 10 cursus.test (cursusd's own name) (RFC 5321 §5.1: bounce, 5.4.6)

With root and Dovecot's LMTP (dovecot-lmtpd), store.test goes through a manualroute router
and an `lmtp` transport to Dovecot on 127.0.0.1 (users alice, bob, carol over quota):
per-recipient replies after DATA (sent, sent, 5.1.1 bounced, 4.2.2 deferred) and the
messages in the users' Maildirs.

relay1.test and relay2.test go through a manualroute router to the policy sink (a smarthost
without DNS): one transaction for both domains.

Checks: per-recipient outcomes in one multi-recipient transaction (sent / bounced /
deferred), connection reuse for consecutive messages (conn=reused, one TCP connection at
the sink), MX order and fallback, A and AAAA fallback, null MX and NXDOMAIN bounce with a
DSN delivered to the sender, 4xx (RCPT and after DATA) and a silent server stay queued.
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CURSUSD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/cursusd")

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port(hosts=("127.0.0.1", "127.0.0.2", "127.0.0.3")):
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts:
            t = socket.socket()
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            t.close()
        if ok:
            return port
    raise SystemExit("no free port")


class PolicySink:
    """SMTP sink: RCPT by local part (bad* 550, busy* 450, else 250); `datafail*` recipients
    make the end of DATA answer 451; `hang` never greets. Records connections and
    transactions."""

    def __init__(self, hang=False):
        self.hang = hang
        self.connections = 0
        self.transactions = []  # (peer, mail, [rcpts], body)
        self.lock = threading.Lock()

    async def handle(self, reader, writer):
        with self.lock:
            self.connections += 1
        peer = writer.get_extra_info("sockname")[0]
        if self.hang:
            await asyncio.sleep(60)
            writer.close()
            return
        writer.write(b"220 sink.test ESMTP policy sink\r\n")
        await self.session(reader, writer, peer)

    async def session(self, reader, writer, peer):
        """The command loop after the greeting, recording transactions under `peer`."""
        mail, rcpts, accepted = None, [], []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.decode("utf-8", "replace").strip()
                up = cmd.upper()
                if up.startswith("EHLO"):
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SIZE 10000000\r\n")
                elif up.startswith("HELO"):
                    writer.write(b"250 sink.test\r\n")
                elif up.startswith("MAIL"):
                    mail, rcpts, accepted = cmd, [], []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif up.startswith("RCPT"):
                    addr = cmd.split("<", 1)[1].split(">", 1)[0].lower()
                    rcpts.append(addr)
                    if addr.startswith("bad"):
                        writer.write(b"550 5.1.1 no such user here\r\n")
                    elif addr.startswith("busy"):
                        writer.write(b"450 4.2.1 mailbox busy, try later\r\n")
                    else:
                        accepted.append(addr)
                        writer.write(b"250 2.1.5 ok\r\n")
                elif up == "DATA":
                    if not accepted:
                        writer.write(b"554 5.5.1 no valid recipients\r\n")
                        continue
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = b""
                    while True:
                        l = await reader.readline()
                        if not l or l == b".\r\n":
                            break
                        body += l
                    with self.lock:
                        self.transactions.append((peer, mail, list(rcpts), body))
                    if any(a.startswith("datafail") for a in accepted):
                        writer.write(b"451 4.3.0 temporary failure after data\r\n")
                    else:
                        writer.write(b"250 2.0.0 queued\r\n")
                elif up == "RSET":
                    writer.write(b"250 2.0.0 ok\r\n")
                elif up == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"502 5.5.2 not here\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()


def run_sinks(port):
    policy = PolicySink()
    hang = PolicySink(hang=True)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main():
        await asyncio.start_server(policy.handle, "127.0.0.2", port)
        await asyncio.start_server(hang.handle, "127.0.0.3", port)
        try:
            await asyncio.start_server(policy.handle, "::1", port)
        except OSError:
            pass
        ready.set()

    def thread():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    threading.Thread(target=thread, daemon=True).start()
    ready.wait(10)
    return policy, hang


DOVECOT_CONF = """protocols = lmtp
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
listen = 127.0.0.1
auth_username_format = %Ln
mail_location = maildir:~/Maildir
mail_plugins = quota
quota_full_tempfail = yes
plugin {{
  quota = maildir:User quota
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def start_dovecot(tmp, port):
    """Dovecot's LMTP on 127.0.0.1:port, or None (not root, not installed)."""
    if os.geteuid() != 0 or not os.path.exists("/usr/lib/dovecot/lmtp"):
        return None
    d = os.path.join(tmp, "dovecot")
    for sub in ("run", "state", "home/alice", "home/bob", "home/carol"):
        os.makedirs(os.path.join(d, sub))
    nobody = pwd.getpwnam("nobody")
    with open(os.path.join(d, "users"), "w") as f:
        for user in ("alice", "bob"):
            f.write(f"{user}::{nobody.pw_uid}:{nobody.pw_gid}::{d}/home/{user}::\n")
        f.write(f"carol::{nobody.pw_uid}:{nobody.pw_gid}::{d}/home/carol::"
                "userdb_quota_rule=*:storage=10B\n")
    subprocess.run(["chown", "-R", "nobody", os.path.join(d, "home")], check=True)
    with open(os.path.join(d, "dovecot.conf"), "w") as f:
        f.write(DOVECOT_CONF.format(d=d, port=port))
    p = subprocess.Popen(["dovecot", "-F", "-c", os.path.join(d, "dovecot.conf")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    return None


def main():
    for tool in ("dnsmasq", "smtp-sink"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            print(f"SKIP: {tool} not installed (scripts/install-test-deps.sh)")
            return 77
    if not os.path.exists(CURSUSD):
        print(f"SKIP: {CURSUSD} not built")
        return 77

    tmp = tempfile.mkdtemp(prefix="cursus-outbound-")
    os.chmod(tmp, 0o755)
    procs = []
    try:
        dns_port = free_port(("127.0.0.1",))
        sink_port = free_port()
        cursus_port = free_port(("127.0.0.1",))

        # The DNS server.
        dns = subprocess.Popen([
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "-k", "--conf-file=/dev/null",
            "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
            "--listen-address=127.0.0.1", f"--port={dns_port}", "--user=root" if os.geteuid() == 0 else "--user=",
            "--pid-file=", "--log-facility=-", "--local=/test/",
            "--mx-host=sink.test,mx.sink.test,10", "--host-record=mx.sink.test,127.0.0.1",
            "--mx-host=py.test,mx.py.test,10", "--host-record=mx.py.test,127.0.0.2",
            "--mx-host=pref.test,mx.py.test,20", "--mx-host=pref.test,dead.pref.test,10",
            "--host-record=dead.pref.test,127.0.0.4",
            "--host-record=nomx.test,127.0.0.2",
            "--host-record=v6.test,::1",
            "--mx-host=hang.test,mx.hang.test,10", "--host-record=mx.hang.test,127.0.0.3",
            # MX 0 . : preference 0, the root name (one zero octet).
            "--dns-rr=nullmx.test,15,000000",
            # Our own name as the best MX: the mail would loop.
            "--mx-host=loop.test,cursus.test,10", "--host-record=cursus.test,127.0.0.1",
        ], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "dnsmasq.log"), "w"))
        procs.append(dns)

        # Postfix's smtp-sink (as nobody when root), and the Python sinks.
        sink_cmd = ["smtp-sink"]
        if os.geteuid() == 0:
            sink_cmd += ["-u", "nobody"]
        sink_cmd += [f"127.0.0.1:{sink_port}", "64"]
        procs.append(subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        policy, hang = run_sinks(sink_port)
        lmtp_port = free_port(("127.0.0.1",))
        dovecot = start_dovecot(tmp, lmtp_port)
        if dovecot:
            procs.append(dovecot)
        else:
            print("note: Dovecot LMTP part skipped (needs root and dovecot-lmtpd)")

        # cursusd, single-user mode.
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
greeting_timeout = 3
connect_timeout = 3
idle_timeout = 10
[routing]
local_domains = ["localhost"]
[[router]]
name = "mailboxes"
driver = "virtual"
table = {{ file = "{tmp}/mailboxes" }}
transport = "local"
[[router]]
name = "relay"
driver = "manualroute"
domains = ["relay1.test", "relay2.test"]
hosts = ["127.0.0.2"]
port = {sink_port}
transport = "smtp"
[[router]]
name = "store"
driver = "manualroute"
domains = ["store.test"]
hosts = ["127.0.0.1"]
port = {lmtp_port}
transport = "dovecot"
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
[[transport]]
name = "dovecot"
driver = "lmtp"
hosts = ["127.0.0.1"]
port = {lmtp_port}
""")
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
        daemon = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        procs.append(daemon)
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

        def submit(rcpts, body="Subject: test\r\n\r\nhello\r\n", sender="sender@localhost"):
            s = smtplib.SMTP("127.0.0.1", cursus_port, timeout=30)
            s.ehlo("test.client")
            s.mail(sender)
            for r in rcpts:
                code, msg = s.rcpt(r)
                assert code == 250, (r, code, msg)
            code, msg = s.data(body)
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

        def line_for(qid, rcpt):
            return wait_for(rf"{re.escape(qid)}: to=<{re.escape(rcpt)}>, [^\n]*")

        # 1. smtp-sink, three messages in a row: one connection, reused.
        lines = []
        for _ in range(3):
            lines.append(line_for(submit(["a@sink.test"]), "a@sink.test"))
        check(all(l and "status=sent" in l.group(0) for l in lines),
              "smtp-sink: three messages sent")
        check(all(l and "relay=mx.sink.test[127.0.0.1]" in l.group(0) for l in lines if l),
              "smtp-sink: relay is the MX host")
        check(sum(1 for l in lines if l and "conn=reused" in l.group(0)) == 2,
              "smtp-sink: the connection is reused for the next messages")

        # 2. Several recipients in one transaction, an outcome for each.
        qid = submit(["ok1@py.test", "bad1@py.test", "busy1@py.test", "ok2@py.test"])
        ok1, bad1, busy1, ok2 = (line_for(qid, r) for r in
                                 ("ok1@py.test", "bad1@py.test", "busy1@py.test", "ok2@py.test"))
        check(ok1 and "status=sent" in ok1.group(0), "policy sink: ok1 sent")
        check(ok2 and "status=sent" in ok2.group(0), "policy sink: ok2 sent")
        check(bad1 and "status=bounced" in bad1.group(0) and "dsn=5.1.1" in bad1.group(0),
              "policy sink: bad1 bounced 5.1.1")
        check(busy1 and "status=deferred" in busy1.group(0) and "dsn=4.2.1" in busy1.group(0),
              "policy sink: busy1 deferred 4.2.1")
        with policy.lock:
            tx = [t for t in policy.transactions if "ok1@py.test" in t[2]]
        check(len(tx) == 1 and len(tx[0][2]) == 4,
              "policy sink: one transaction carried the four recipients")
        time.sleep(0.5)
        check(not re.search(rf"{re.escape(qid)}: removed", log_text()),
              "the deferred recipient keeps the message queued")

        # 3. MX order: the preference-10 host refuses connections, the preference-20 one takes it.
        qid = submit(["ok@pref.test"])
        l = line_for(qid, "ok@pref.test")
        check(l and "status=sent" in l.group(0) and "relay=mx.py.test[127.0.0.2]" in l.group(0),
              "MX order: falls back from the refused preference-10 host to preference 20")

        # 4. No MX: the A record; only AAAA: ::1.
        qid = submit(["ok@nomx.test"])
        l = line_for(qid, "ok@nomx.test")
        check(l and "status=sent" in l.group(0) and "[127.0.0.2]" in l.group(0),
              "no MX: delivered to the domain's A record")
        qid = submit(["ok@v6.test"])
        l = line_for(qid, "ok@v6.test")
        check(l and "status=sent" in l.group(0) and "[::1]" in l.group(0),
              "no MX, AAAA only: delivered over IPv6")

        # 5. Null MX and NXDOMAIN: bounced at once, the DSN delivered to the sender.
        qid_null = submit(["x@nullmx.test"], sender="owner@localhost")
        l = line_for(qid_null, "x@nullmx.test")
        check(l and "status=bounced" in l.group(0) and "dsn=5.1.10" in l.group(0),
              "null MX: bounced with 5.1.10")
        qid = submit(["x@nowhere.test"], sender="owner@localhost")
        l = line_for(qid, "x@nowhere.test")
        check(l and "status=bounced" in l.group(0) and "dsn=5.1.2" in l.group(0),
              "NXDOMAIN: bounced with 5.1.2")
        qid = submit(["x@loop.test"], sender="owner@localhost")
        l = line_for(qid, "x@loop.test")
        check(l and "status=bounced" in l.group(0) and "dsn=5.4.6" in l.group(0),
              "own name as the best MX: bounced with 5.4.6 (loop)")
        maildir = os.path.join(data, "mail", "owner", "Maildir", "new")
        deadline = time.time() + 10
        found = False
        while time.time() < deadline and not found:
            if os.path.isdir(maildir):
                for name in os.listdir(maildir):
                    if b"5.1.10" in open(os.path.join(maildir, name), "rb").read():
                        found = True
            time.sleep(0.2)
        check(found, "null MX: the sender got a DSN with 5.1.10")

        # 6. 4xx after DATA and a server that never greets: deferred, still queued.
        qid = submit(["datafail@py.test"])
        l = line_for(qid, "datafail@py.test")
        check(l and "status=deferred" in l.group(0) and "dsn=4.3.0" in l.group(0),
              "451 after DATA: deferred")
        qid = submit(["x@hang.test"])
        l = line_for(qid, "x@hang.test", )
        check(l and "status=deferred" in l.group(0) and "dsn=4.4.2" in l.group(0),
              "silent server: deferred after the greeting timeout")
        check(not re.search(rf"{re.escape(qid)}: removed", log_text()),
              "silent server: the message stays queued")

        # 7. A relay host (manualroute) for two domains: one transaction for both.
        qid = submit(["x@relay1.test", "y@relay2.test"])
        a, b = line_for(qid, "x@relay1.test"), line_for(qid, "y@relay2.test")
        check(a and b and "status=sent" in a.group(0) and "status=sent" in b.group(0)
              and "router=relay" in a.group(0), "manualroute: both domains sent via the relay host")
        with policy.lock:
            tx = [t for t in policy.transactions if "x@relay1.test" in t[2]]
        check(len(tx) == 1 and tx[0][2] == ["x@relay1.test", "y@relay2.test"],
              "manualroute: the two domains shared one transaction")

        # 8. Dovecot's LMTP: one reply per recipient after DATA.
        if dovecot:
            rcpts = ["alice@store.test", "nobody@store.test", "bob@store.test", "carol@store.test"]
            qid = submit(rcpts, body="Subject: to the store\r\n\r\nhello Dovecot\r\n")
            alice, nobody_, bob, carol = (line_for(qid, r) for r in rcpts)
            check(alice and "status=sent" in alice.group(0) and "transport=dovecot" in alice.group(0),
                  "Dovecot LMTP: alice sent")
            check(bob and "status=sent" in bob.group(0), "Dovecot LMTP: bob sent")
            check(nobody_ and "status=bounced" in nobody_.group(0) and "dsn=5.1.1" in nobody_.group(0),
                  "Dovecot LMTP: unknown user bounced 5.1.1")
            check(carol and "status=deferred" in carol.group(0) and "dsn=4.2.2" in carol.group(0),
                  "Dovecot LMTP: carol over quota deferred 4.2.2 (reply after DATA)")
            stored = 0
            for user in ("alice", "bob"):
                new = os.path.join(tmp, "dovecot", "home", user, "Maildir", "new")
                for name in os.listdir(new) if os.path.isdir(new) else []:
                    if b"hello Dovecot" in open(os.path.join(new, name), "rb").read():
                        stored += 1
            check(stored == 2, "Dovecot LMTP: the message is in alice's and bob's Maildir")
    finally:
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
            except Exception:
                p.kill()
        if failures:
            print("--- cursusd log ---")
            try:
                print(open(os.path.join(tmp, "cursusd.log")).read()[-6000:])
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("outbound: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
