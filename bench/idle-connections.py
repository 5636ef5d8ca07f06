#!/usr/bin/env python3
"""Holds N idle SMTP connections open to HOST:PORT and reports the server's memory.

usage: idle-connections.py HOST:PORT PID [N]

Opens N TCP connections (each reads the 220 greeting, then says nothing), waits until the
server has answered them all, samples the server process's VmRSS (from /proc/PID/status)
before and with all connections open, and prints one line:

    idle: connections=N greeted=G refused=R rss_before=X KiB rss_open=Y KiB per_connection=Z bytes

Only a reply starting `220` counts as greeted; anything else (421 over the connection limit,
a 554, or the server closing) counts as refused, so greeted=N means every connection is held.

Needs a file descriptor limit above N (the caller raises `ulimit -n`).
"""

import os
import resource
import selectors
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    before = rss_kib(pid)
    sel = selectors.DefaultSelector()
    socks = []
    greeted = 0
    refused = 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, int(port)))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        # Drain greetings as we go so the backlog never fills.
        if i % 500 == 499:
            for key, _ in sel.select(timeout=0):
                try:
                    data = key.fileobj.recv(512)
                except BlockingIOError:
                    continue
                if data.startswith(b"220"):
                    greeted += 1
                else:
                    refused += 1
                sel.unregister(key.fileobj)
    deadline = time.time() + 60
    while greeted + refused < n and time.time() < deadline:
        events = sel.select(timeout=1)
        if not events:
            continue
        for key, _ in events:
            try:
                data = key.fileobj.recv(512)
            except BlockingIOError:
                continue
            # Only a 220 is a greeting: a 421 (connection limit), a 554 or a close is not.
            if data.startswith(b"220"):
                greeted += 1
            else:
                refused += 1
            sel.unregister(key.fileobj)
    time.sleep(1)
    rss_open = rss_kib(pid)
    print(
        f"idle: connections={n} greeted={greeted} refused={refused} rss_before={before} KiB "
        f"rss_open={rss_open} KiB per_connection={(rss_open - before) * 1024 // max(n, 1)} bytes",
        flush=True,
    )
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
