#!/usr/bin/env python3
"""cursusd in system mode (root): started as root with a configuration file in a temporary
directory (its own data_dir, ports, submission socket and [lda] policy), it binds its ports,
spawns cursus-lda (root) and becomes the `cursus` user.

Checks:
- the daemon runs as `cursus` (every uid and gid), cursus-lda as root, and cursus-lda goes
  away with the daemon;
- mail to two real test users (cursus-sm1, cursus-sm2) lands in their ~/Maildir/new, files
  owned by them and not readable by others;
- an unknown user gets 550 5.1.1 at RCPT;
- destinations the LDA policy refuses are not written: a path outside any rule, a path in
  the user's home that no rule allows, and a user whose ~/Maildir is a symbolic link; the
  sender gets a bounce for the permanent refusals;
- root's mail is not written to /root (uid 0 is refused unless the policy names root);
- local submission: a user runs `cursus sendmail`, finding the daemon through the default
  socket in the data directory; the daemon knows the user from SO_PEERCRED
  (Received: ... local user cursus-sm1, Return-Path cursus-sm1@...);
- .forward, read as the user by cursus-lda (the daemon, running as `cursus`, cannot even
  enter cursus-sm4's 0700 home): a copy kept with `\\user`, another local user, an
  allow-listed |command and a /file, each written as cursus-sm4; a group-writable .forward
  (cursus-sm6) and one owned by another user (cursus-sm7) are ignored (the mail stays
  with its user, the log says why);
- an aliases router (a file in /etc/aliases syntax): a list, an :include: file, a |command
  and a /file, the last two run and written as the router's `user` (cursus-sm8); an alias
  loop is refused 550 5.4.6 at RCPT and bounced 5.4.6 to a local submitter.

usage (root): python3 tests/daemon/system_mode.py
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

T = harness.Tally("system_mode")
USERS = ["cursus-sm1", "cursus-sm2", "cursus-sm3", "cursus-sm4", "cursus-sm5", "cursus-sm6", "cursus-sm7", "cursus-sm8"]


def proc_ids(pid):
    """(uids, gids, ppid, name) of a process, from /proc."""
    uids = gids = None
    ppid = None
    name = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Uid":
                uids = [int(x) for x in v.split()]
            elif k == "Gid":
                gids = [int(x) for x in v.split()]
            elif k == "PPid":
                ppid = int(v)
            elif k == "Name":
                name = v.strip()
    return uids, gids, ppid, name


def running(pid):
    """Alive and not a zombie (a reparented zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if proc_ids(p)[2] == pid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def maildir_new(home):
    d = os.path.join(home, "Maildir", "new")
    return [os.path.join(d, f) for f in sorted(os.listdir(d))] if os.path.isdir(d) else []


def wait_new(home, n, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(maildir_new(home)) >= n:
            break
        time.sleep(0.05)
    return maildir_new(home)


def send(port, sender, rcpts, mid):
    c = Raw(port)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{sender}>")
    codes = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    code, _ = c.cmd("DATA")
    if code == 354:
        c.send(f"Message-ID: <{mid}@sys.test>\r\nSubject: {mid}\r\n\r\nsystem mode\r\n.\r\n".encode())
        code, _ = c.reply()
    c.cmd("QUIT")
    c.close()
    return [x[0] for x in codes], code


def setup_forward_and_aliases(base, bindir, users, write):
    """The files of check_forward_and_aliases: the allow-listed program (it saves the
    message as whoever runs it), a directory of mbox files per user, the .forward files and
    the aliases file with its include."""
    write(
        os.path.join(bindir, "savemail"),
        "#!/bin/sh\n# Saves the message in OUT/<user>.<random>, as the user running it.\n"
        f'f=$(/usr/bin/mktemp "{base}/out/$(/usr/bin/id -un).XXXXXX") || exit 75\n'
        '/bin/cat > "$f"\n',
        0o755,
    )
    os.makedirs(os.path.join(base, "out"))
    os.chmod(os.path.join(base, "out"), 0o1777)
    for u in ("cursus-sm4", "cursus-sm8"):
        d = os.path.join(base, "files", u)
        os.makedirs(d)
        os.chmod(os.path.join(base, "files"), 0o755)
        os.chown(d, users[u].pw_uid, users[u].pw_gid)
        os.chmod(d, 0o700)

    def forward(user, text, mode, owner=None):
        pw = users[user]
        path = os.path.join(pw.pw_dir, ".forward")
        write(path, text, mode)
        o = users[owner] if owner else pw
        os.chown(path, o.pw_uid, o.pw_gid)
        os.chmod(path, mode)

    # cursus-sm4: a home only its owner can enter; keep a copy, forward to cursus-sm5, run
    # the program, append to an mbox.
    sm4 = users["cursus-sm4"]
    os.chmod(sm4.pw_dir, 0o700)
    forward(
        "cursus-sm4",
        f'\\cursus-sm4, cursus-sm5\n"|{bindir}/savemail"\n{base}/files/cursus-sm4/forward.mbox\n',
        0o600,
    )
    # Unsafe: group-writable (cursus-sm6), someone else's file (cursus-sm7).
    forward("cursus-sm6", "cursus-sm5\n", 0o664)
    forward("cursus-sm7", "cursus-sm5\n", 0o644, owner="cursus-sm5")
    write(os.path.join(base, "staff.list"), "cursus-sm5\ncursus-sm7\n")
    write(
        os.path.join(base, "aliases"),
        "# /etc/aliases syntax\n"
        "team: cursus-sm5, cursus-sm6\n"
        f"staff: :include:{base}/staff.list\n"
        f'piped: "|{bindir}/savemail"\n'
        f"filed: {base}/files/cursus-sm8/filed.mbox\n"
        "loop-a: loop-b\n"
        "loop-b: loop-a\n",
    )


def has_message(path, mid):
    try:
        with open(path, "rb") as f:
            return f"<{mid}@sys.test>".encode() in f.read()
    except OSError:
        return False


def wait_for(what, timeout=15):
    """Polls `what()` until it is true or the time is up; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def check_forward_and_aliases(port, base, users, log_text, env, front, data):
    """.forward read through cursus-lda as the user, unsafe .forward files ignored, and the
    aliases router's list, include, command, file and loop (see the module docstring)."""

    def in_maildir(user, mid):
        return [f for f in maildir_new(users[user].pw_dir) if has_message(f, mid)]

    def saved(user, mid):
        out = os.path.join(base, "out")
        return [os.path.join(out, f) for f in os.listdir(out) if f.startswith(user + ".") and has_message(os.path.join(out, f), mid)]

    def owned(paths, user):
        pw = users[user]
        return bool(paths) and all(os.stat(p).st_uid == pw.pw_uid for p in paths)

    # .forward in a 0700 home: the daemon (cursus) cannot read it; cursus-lda can, as the user.
    sm4 = users["cursus-sm4"]
    T.check(os.stat(sm4.pw_dir).st_mode & 0o777 == 0o700, "cursus-sm4's home is closed to others (0700)")
    codes, final = send(port, "someone@x.test", ["cursus-sm4@localhost"], "fwd")
    T.check(codes == [250] and final == 250, ".forward user accepted at RCPT (the forward router read it through cursus-lda)", f"{codes} {final}")
    kept = wait_for(lambda: in_maildir("cursus-sm4", "fwd"))
    T.check(owned(kept, "cursus-sm4"), "\\cursus-sm4 in the .forward: a copy kept in ~/Maildir, owned by cursus-sm4", str(kept))
    onward = wait_for(lambda: in_maildir("cursus-sm5", "fwd"))
    T.check(owned(onward, "cursus-sm5"), ".forward to another local user: delivered to cursus-sm5, owned by cursus-sm5", str(onward))
    ran = wait_for(lambda: saved("cursus-sm4", "fwd"))
    T.check(owned(ran, "cursus-sm4"), ".forward |command (allow-listed): it ran as cursus-sm4 with the message", str(ran))
    mbox = os.path.join(base, "files", "cursus-sm4", "forward.mbox")
    wait_for(lambda: has_message(mbox, "fwd"))
    T.check(has_message(mbox, "fwd") and owned([mbox], "cursus-sm4"), ".forward /file (allowed by the policy): appended as cursus-sm4", mbox)
    lines = [ln for ln in log_text().splitlines() if "to=<cursus-sm4@localhost>" in ln and "status=" in ln]
    T.check(lines and not any("status=deferred" in ln or "status=bounced" in ln for ln in lines), "no .forward delivery deferred or bounced", "\n".join(lines[-4:]))

    # Unsafe .forward files are ignored: the mail stays with its user.
    codes, final = send(port, "someone@x.test", ["cursus-sm6@localhost", "cursus-sm7@localhost"], "unsafe")
    T.check(codes == [250, 250] and final == 250, "users with unsafe .forward files accepted", f"{codes} {final}")
    for u, why in (("cursus-sm6", "group- or world-writable"), ("cursus-sm7", f"owned by uid {users['cursus-sm5'].pw_uid}")):
        got = wait_for(lambda u=u: in_maildir(u, "unsafe"))
        T.check(owned(got, u), f"{u}: the unsafe .forward is ignored, the mail lands in ~/Maildir", str(got))
        line = [ln for ln in log_text().splitlines() if f"~{u}/.forward not used" in ln]
        T.check(line and why in line[-1], f"{u}: the log says why the .forward is not used ({why})", line[-1] if line else "no line")
    # cursus-sm5 is where both unsafe files point: nothing must arrive there.
    time.sleep(1)
    T.check(not in_maildir("cursus-sm5", "unsafe"), "nothing reaches the unsafe .forward files' target (cursus-sm5)")

    # The aliases router: a list, an :include:, a command and a file as its user.
    codes, final = send(port, "someone@x.test", ["team@localhost", "staff@localhost", "piped@localhost", "filed@localhost"], "aliases")
    T.check(codes == [250] * 4 and final == 250, "aliases accepted at RCPT", f"{codes} {final}")
    for u, how in (("cursus-sm5", "list and :include:"), ("cursus-sm6", "list"), ("cursus-sm7", ":include:")):
        got = wait_for(lambda u=u: in_maildir(u, "aliases"))
        T.check(owned(got, u), f"alias {how}: delivered to {u}, owned by {u}", str(got))
    ran = wait_for(lambda: saved("cursus-sm8", "aliases"))
    T.check(owned(ran, "cursus-sm8"), "alias |command: run as the router's user (cursus-sm8)", str(ran))
    filed = os.path.join(base, "files", "cursus-sm8", "filed.mbox")
    wait_for(lambda: has_message(filed, "aliases"))
    T.check(has_message(filed, "aliases") and owned([filed], "cursus-sm8"), "alias /file: appended as the router's user (cursus-sm8)", filed)

    # An alias loop: refused at RCPT over SMTP, bounced to a local submitter.
    c = Raw(port)
    c.ehlo()
    c.cmd("MAIL FROM:<someone@x.test>")
    code, text = c.cmd("RCPT TO:<loop-a@localhost>")
    c.close()
    T.check(code == 550 and text[0].startswith("5.4.6"), "alias loop: 550 5.4.6 at RCPT", f"{code} {text}")
    sm5 = users["cursus-sm5"]
    p = subprocess.run(
        ["setpriv", "--reuid=cursus-sm5", "--regid=cursus-sm5", "--init-groups", "--", front, "sendmail", "loop-a@localhost"],
        input=b"Subject: loop\nMessage-ID: <loop@sys.test>\n\nround and round\n",
        capture_output=True,
        env={**env, "CURSUS_DATA_DIR": data, "HOME": sm5.pw_dir},
        timeout=60,
    )
    T.check(p.returncode == 0, "a local submission to the alias loop is accepted", p.stderr.decode(errors="replace"))

    def loop_bounce():
        for f in maildir_new(sm5.pw_dir):
            with open(f, "rb") as fh:
                b = fh.read()
            if b"Return-Path: <>" in b and b"loop-a" in b:
                return b
        return b""

    bounce = wait_for(loop_bounce)
    T.check(bounce and b"5.4.6" in bounce, "alias loop: the submitter gets a 5.4.6 bounce", bounce[:300].decode(errors="replace"))
    line = [ln for ln in log_text().splitlines() if "to=<loop-a@localhost>" in ln and "status=bounced" in ln]
    T.check(line and "dsn=5.4.6" in line[-1], "alias loop: logged bounced, dsn=5.4.6", line[-1] if line else "no line")


def main():
    harness.need_root("starts cursusd as root and creates users")
    if not os.path.exists(os.path.join(harness.TARGET, "cursus-lda")):
        T.check(False, "cursus-lda is built", harness.TARGET)
        return T.done()
    cursus = harness.ensure_user("cursus", system=True, home="/nonexistent")
    users = {u: harness.ensure_user(u) for u in USERS}
    for u, pw in users.items():
        for sub in ("Maildir", "Other", ".forward"):
            p = os.path.join(pw.pw_dir, sub)
            if os.path.islink(p) or os.path.isfile(p):
                os.unlink(p)
            elif os.path.isdir(p):
                shutil.rmtree(p)

    base = tempfile.mkdtemp(prefix="cursus-system-", dir="/tmp")
    os.chmod(base, 0o755)
    bindir = os.path.join(base, "bin")
    os.makedirs(bindir)
    os.chmod(bindir, 0o755)
    for b in ("cursusd", "cursus", "cursus-lda"):
        shutil.copy(os.path.join(harness.TARGET, b), os.path.join(bindir, b))
        os.chmod(os.path.join(bindir, b), 0o755)
    data = os.path.join(base, "data")
    outside = os.path.join(base, "outside")
    sm3_target = os.path.join(base, "sm3-target")
    port = harness.free_port()
    policy = os.path.join(base, "lda-policy.toml")

    def write(path, text, mode=0o644):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    write(
        policy,
        'min_uid = 1000\n\n[[allow]]\nname = "home-maildir"\nkind = "maildir"\npath = "~/Maildir"\nsubtree = true\n'
        # For .forward and aliases: one program, and mbox files in a directory per user.
        f'\n[[allow]]\nname = "savemail"\nkind = "command"\npath = "{bindir}/savemail"\n'
        f'\n[[allow]]\nname = "files"\nkind = "mbox"\npath = "{base}/files/${{user}}"\nsubtree = true\n',
    )
    setup_forward_and_aliases(base, bindir, users, write)
    sm1 = users["cursus-sm1"]
    write(
        os.path.join(base, "virtual"),
        f"outside@localhost cursus-sm1 maildir:{outside}\n"
        f"other@localhost cursus-sm1 maildir:{sm1.pw_dir}/Other\n",
    )
    config = os.path.join(base, "cursus.toml")
    write(
        config,
        f"""data_dir = "{data}"
user = "cursus"

[smtp]
listen = ["127.0.0.1:{port}"]

[lda]
policy = "{policy}"

[routing]
local_domains = ["localhost"]

[[router]]
name = "special"
driver = "virtual"
table = {{ file = "{base}/virtual" }}
transport = "local"

[[router]]
name = "aliases"
driver = "aliases"
file = "{base}/aliases"
user = "cursus-sm8"

[[router]]
name = "userforward"
driver = "forward"

[[router]]
name = "localuser"
driver = "localuser"
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
mailbox = "maildir:~/Maildir"

[[transport]]
name = "remote"
driver = "smtp"
""",
    )
    # cursus-sm3: ~/Maildir is a symbolic link to a directory it owns.
    sm3 = users["cursus-sm3"]
    os.makedirs(os.path.join(sm3_target, "new"))
    for sub in ("", "new"):
        os.chown(os.path.join(sm3_target, sub), sm3.pw_uid, sm3.pw_gid)
        os.chmod(os.path.join(sm3_target, sub), 0o700)
    os.symlink(sm3_target, os.path.join(sm3.pw_dir, "Maildir"))
    root_maildir_before = os.path.exists("/root/Maildir")

    log_path = os.path.join(base, "cursusd.log")
    log = open(log_path, "wb")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [os.path.join(bindir, "cursusd"), "-c", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=base
    )
    log.close()
    ok = False
    lda_pids = []

    def log_text():
        with open(log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if "accepting local submissions" in log_text():
                break
            time.sleep(0.05)
        if not T.check(proc.poll() is None, "cursusd started as root is running", log_text()):
            return T.done()
        uids, gids, _, _ = proc_ids(proc.pid)
        T.check(
            uids == [cursus.pw_uid] * 4 and gids == [cursus.pw_gid] * 4,
            "cursusd dropped to the cursus user (real, effective, saved, fs uid and gid)",
            f"uids {uids} gids {gids}",
        )
        lda_pids = [p for p in children(proc.pid) if proc_ids(p)[3] == "cursus-lda"]
        T.check(len(lda_pids) == 1 and proc_ids(lda_pids[0])[0][1] == 0, "cursus-lda was spawned and runs as root", str(lda_pids))
        T.check("system mode" in log_text(), "the log says system mode")
        st = os.stat(data)
        T.check(st.st_uid == cursus.pw_uid, "the data directory belongs to cursus")
        T.check(st.st_mode & 0o777 == 0o711, f"the data directory is searchable, not listable, by users ({oct(st.st_mode & 0o777)})")
        q = os.stat(os.path.join(data, "queue"))
        T.check(q.st_mode & 0o077 == 0, f"the queue is closed to others ({oct(q.st_mode & 0o777)})")
        public = ("submit.sock", "showq.sock")
        open_files = [f for f in os.listdir(data) if f not in public and os.lstat(os.path.join(data, f)).st_mode & 0o004]
        T.check(not open_files, "nothing in the data directory is readable by others but the submission and showq sockets", str(open_files))

        codes, final = send(port, "someone@x.test", ["cursus-sm1@localhost", "cursus-sm2@localhost"], "both")
        T.check(codes == [250, 250] and final == 250, "mail to two real users accepted", f"{codes} {final}")
        for u in ("cursus-sm1", "cursus-sm2"):
            pw = users[u]
            files = wait_new(pw.pw_dir, 1)
            T.check(len(files) == 1, f"{u}: delivered to ~/Maildir/new")
            for f in files:
                s = os.stat(f)
                T.check(s.st_uid == pw.pw_uid and s.st_gid == pw.pw_gid, f"{u}: the file is owned by {u}")
                T.check(s.st_mode & 0o007 == 0, f"{u}: the file is not readable by others ({oct(s.st_mode & 0o777)})")
                with open(f, "rb") as fh:
                    T.check(b"<both@sys.test>" in fh.read(), f"{u}: it is the message sent")
            md = os.stat(os.path.join(pw.pw_dir, "Maildir"))
            T.check(md.st_uid == pw.pw_uid and md.st_mode & 0o007 == 0, f"{u}: ~/Maildir owned by {u}, closed to others ({oct(md.st_mode & 0o777)})")

        c = Raw(port)
        c.ehlo()
        c.cmd("MAIL FROM:<someone@x.test>")
        code, text = c.cmd("RCPT TO:<no-such-user-here@localhost>")
        T.check(code == 550 and text[0].startswith("5.1.1"), "unknown user: 550 5.1.1 at RCPT", f"{code} {text}")
        c.close()

        # Refused by the policy: outside any rule, inside the home but not allowed, a
        # symlinked ~/Maildir, and root.
        codes, final = send(
            port,
            "cursus-sm2@localhost",
            ["outside@localhost", "other@localhost", "cursus-sm3@localhost", "root@localhost"],
            "refused",
        )
        T.check(final == 250, "messages for refused destinations are accepted at SMTP time", f"{codes} {final}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done = [l for l in log_text().splitlines() if l.startswith("cursusd:") and "status=" in l]
            if sum(1 for r in ("outside@", "other@", "cursus-sm3@", "root@") if any(f"to=<{r}localhost>" in l for l in done)) == 4:
                break
            time.sleep(0.1)
        T.check(not os.path.exists(outside), f"a path no rule allows is not created ({outside})")
        T.check(not os.path.exists(os.path.join(sm1.pw_dir, "Other")), "~/Other (no rule) is not created")
        T.check(os.listdir(os.path.join(sm3_target, "new")) == [] and not os.path.exists(os.path.join(sm3_target, "tmp")),
                "nothing written through cursus-sm3's symlinked ~/Maildir")
        if not root_maildir_before:
            T.check(not os.path.exists("/root/Maildir"), "nothing written for root (/root/Maildir not created)")
        lines = [l for l in log_text().splitlines() if "to=<" in l and "status=" in l]
        for rcpt in ("outside@localhost", "other@localhost", "cursus-sm3@localhost", "root@localhost"):
            mine = [l for l in lines if f"to=<{rcpt}>" in l or (f"<{rcpt}>" in l)]
            T.check(
                mine and all("status=sent" not in l for l in mine),
                f"{rcpt}: refused (bounced or deferred), never sent",
                mine[-1] if mine else "no log line",
            )
            if mine:
                print("  " + mine[-1])
        # The permanent refusals come back to the sender (cursus-sm2) as a bounce.
        files = wait_new(users["cursus-sm2"].pw_dir, 2, timeout=10)
        bounce = b""
        for f in files:
            with open(f, "rb") as fh:
                b = fh.read()
            if b"Return-Path: <>" in b:
                bounce = b
        T.check(bounce and b"outside@localhost" in bounce, "the sender gets a bounce naming the refused destination")

        # Local submission as an ordinary user, through the default socket in the data dir.
        front = os.path.join(bindir, "cursus")
        p = subprocess.run(
            ["setpriv", "--reuid=cursus-sm1", "--regid=cursus-sm1", "--init-groups", "--", front, "sendmail", "cursus-sm2@localhost"],
            input=b"Subject: from sm1\nMessage-ID: <submitted@sys.test>\n\nlocal submission\n",
            capture_output=True,
            env={**env, "CURSUS_DATA_DIR": data, "HOME": sm1.pw_dir},
            timeout=60,
        )
        sub_ok = T.check(
            p.returncode == 0,
            "an ordinary user submits with `cursus sendmail` through the default socket (DATA_DIR/submit.sock)",
            p.stderr.decode(errors="replace").strip(),
        )
        if sub_ok:
            deadline = time.monotonic() + 10
            got = b""
            while time.monotonic() < deadline and not got:
                for f in maildir_new(users["cursus-sm2"].pw_dir):
                    with open(f, "rb") as fh:
                        b = fh.read()
                    if b"<submitted@sys.test>" in b:
                        got = b
                time.sleep(0.05)
            T.check(b"local user cursus-sm1" in got, "the daemon knows the submitter from SO_PEERCRED (Received)", got[:400].decode(errors="replace"))
            T.check(b"Return-Path: <cursus-sm1@" in got, "the envelope sender is the submitting user")

        # sendmail with one good and one unknown recipient: the good one gets the message; the
        # failure must not vanish into a line on stderr (a nonzero exit or a bounce).
        p = subprocess.run(
            ["setpriv", "--reuid=cursus-sm1", "--regid=cursus-sm1", "--init-groups", "--", front, "sendmail",
             "cursus-sm2@localhost", "no-such-user-here@localhost"],
            input=b"Subject: partial\nMessage-ID: <partial@sys.test>\n\none good, one unknown\n",
            capture_output=True,
            env={**env, "CURSUS_DATA_DIR": data, "HOME": sm1.pw_dir},
            timeout=60,
        )
        err = p.stderr.decode(errors="replace")
        # Local submission is not refused at RCPT (programs rarely read a refusal): the
        # message is accepted for both and the unknown one is bounced to the submitter.
        T.check(p.returncode == 0, "sendmail accepts the message for both recipients", err)
        deadline = time.monotonic() + 5
        good = bounced = False
        while time.monotonic() < deadline and not (good and bounced):
            if good and deadline - time.monotonic() > 1.5:
                deadline = time.monotonic() + 1.5  # the bounce would follow at once
            good = any(b"<partial@sys.test>" in open(f, "rb").read() for f in maildir_new(users["cursus-sm2"].pw_dir))
            bounced = any(
                b"Return-Path: <>" in (b := open(f, "rb").read()) and b"no-such-user-here" in b
                for f in maildir_new(sm1.pw_dir)
            )
            time.sleep(0.1)
        T.check(good, "the accepted recipient gets the message")
        T.check(bounced, "the unknown recipient is bounced to the submitting user", f"exit {p.returncode}")

        # Over quota in system mode: the daemon (as cursus) cannot look into ~/Maildir, so
        # cursus-lda's child tells it when cur/ was last touched: read an hour ago, the
        # message waits (4.2.2); not read for 10 days, it bounces (5.2.2).
        sm2 = users["cursus-sm2"]
        md2 = os.path.join(sm2.pw_dir, "Maildir")
        size_file = os.path.join(md2, "maildirsize")
        write(size_file, "10S\n", 0o600)
        os.chown(size_file, sm2.pw_uid, sm2.pw_gid)

        def quota_line(mid, timeout=15):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                lines = [ln for ln in log_text().splitlines() if "to=<cursus-sm2@localhost>" in ln and ("dsn=4.2.2" in ln or "dsn=5.2.2" in ln)]
                if len(lines) >= mid:
                    return lines[mid - 1]
                time.sleep(0.1)
            return ""

        now = time.time()
        os.utime(os.path.join(md2, "cur"), (now - 3600, now - 3600))
        send(port, "someone@x.test", ["cursus-sm2@localhost"], "quota-read")
        line = quota_line(1)
        T.check("status=deferred" in line and "being read" in line, "over quota, cur/ read an hour ago: deferred 4.2.2 (seen by cursus-lda)", line)
        os.utime(os.path.join(md2, "cur"), (now - 10 * 86400, now - 10 * 86400))
        send(port, "someone@x.test", ["cursus-sm2@localhost"], "quota-unread")
        line = quota_line(2)
        T.check("status=bounced" in line and "not been read" in line, "over quota, cur/ untouched for 10 days: bounced 5.2.2", line)
        os.unlink(size_file)

        check_forward_and_aliases(port, base, users, log_text, env, front, data)

        # mailq: a message stays queued (its smarthost, 127.0.0.1:9, refuses connections);
        # root (the administrator) lists it from the spool; an ordinary user cannot read the
        # spool and gets the listing from the daemon's showq socket.
        codes, final = send(port, "someone@x.test", ["far@remote.example"], "queued")
        T.check(final == 250, "a message for a remote domain is queued", f"{codes} {final}")
        time.sleep(0.5)
        p = subprocess.run([front, "sendmail", "-bp"], capture_output=True, env={**env, "CURSUS_DATA_DIR": data}, timeout=60)
        T.check(p.returncode == 0 and b"far@remote.example" in p.stdout, "root runs mailq (-bp) and sees the queued message", (p.stdout + p.stderr).decode(errors="replace"))
        p = subprocess.run(
            ["setpriv", "--reuid=cursus-sm1", "--regid=cursus-sm1", "--init-groups", "--", front, "sendmail", "-bp"],
            capture_output=True,
            env={**env, "CURSUS_DATA_DIR": data, "HOME": sm1.pw_dir},
            timeout=60,
        )
        out = (p.stdout + p.stderr).decode(errors="replace")
        T.check("empty" not in out.lower(), "an ordinary user's mailq never claims a non-empty queue is empty", out.strip())
        T.check(p.returncode == 0 or out.strip(), "an ordinary user's mailq fails with a message when it cannot read", out.strip())
        T.check(
            p.returncode == 0 and "far@remote.example" in out,
            "an ordinary user lists the queue in system mode (through the daemon's showq socket)",
            out.strip(),
        )

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        T.check(rc == 0, "cursusd stops cleanly on SIGTERM", str(rc))
        deadline = time.monotonic() + 5
        while True:
            alive = [p for p in lda_pids if running(p)]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        T.check(not alive, "cursus-lda ends with the daemon", str(alive))
        T.check("panicked" not in log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in lda_pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.unlink(os.path.join(sm3.pw_dir, "Maildir"))
        except OSError:
            pass
        for pw in users.values():
            try:
                os.unlink(os.path.join(pw.pw_dir, ".forward"))
            except OSError:
                pass
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"note: kept {base}; log tail:")
            print("\n".join(log_text().splitlines()[-25:]))
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
