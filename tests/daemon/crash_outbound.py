#!/usr/bin/env python3
"""kill -9 cursusd repeatedly while it relays to another SMTP server; nothing that got 250
may be lost (issue 6 §4: "kill -9 during outbound delivery loses nothing").

Four sender threads send messages for x@sink.test, each with a unique Message-ID, over
SMTP, recording which got 250. cursusd relays them through a manualroute router to a sink
(an SMTP server in this process that answers DATA after a short pause, so deliveries are
in flight when the kill lands). The daemon is killed with SIGKILL KILLS times and
restarted each time. At the end the queue must drain and the sink must hold every
Message-ID that got 250, each complete; duplicates only from deliveries in flight.

usage: python3 tests/daemon/crash_outbound.py [KILLS]
"""

import collections
import os
import random
import socketserver
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

T = harness.Tally("crash_outbound")
KILLS = int(sys.argv[1]) if len(sys.argv) > 1 else 4
THREADS = 4
SLOTS = 16


class Sink(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connections overflows it, Linux drops
    # the handshake's last ACK, and the client waits for a greeting that never comes.
    request_queue_size = 256

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SinkSession)
        self.lock = threading.Lock()
        self.messages = []  # raw DATA texts


class SinkSession(socketserver.StreamRequestHandler):
    def handle(self):
        w = self.wfile
        w.write(b"220 sink.test ESMTP\r\n")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                w.write(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                w.write(b"354 go on\r\n")
                w.flush()
                lines = []
                while True:
                    l = self.rfile.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    lines.append(l)
                time.sleep(0.005)  # a delivery in flight for a moment
                with self.server.lock:
                    self.server.messages.append(b"".join(lines))
                w.write(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"250 2.0.0 ok\r\n")
            w.flush()


def main():
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    routing = f"""
[routing]
local_domains = ["localhost"]

[[router]]
name = "relay"
driver = "manualroute"
domains = ["sink.test"]
hosts = ["127.0.0.1"]
port = {sink.server_address[1]}
transport = "remote"

[[transport]]
name = "remote"
driver = "smtp"
"""
    d = harness.Daemon("crash-out", routing=routing)
    ok = False
    try:
        d.start()
        senders = harness.Senders(d.port, "x@sink.test", "relay", THREADS, filler_lines=0)
        senders.start()
        rng = random.Random(os.environ.get("CRASH_SEED", str(time.time())))
        for k in range(KILLS):
            time.sleep(rng.uniform(0.4, 1.2))
            d.kill9()
            time.sleep(rng.uniform(0.0, 0.2))
            d.start()
            print(f"kill {k + 1}/{KILLS}: {len(senders.accepted)} accepted so far", flush=True)
        time.sleep(0.8)
        senders.join()
        accepted = senders.accepted
        T.check(len(accepted) >= 40, f"senders got {len(accepted)} messages accepted across {KILLS} kills")
        T.check(d.wait_queue_empty(60), "the queue drains after the last restart")
        time.sleep(0.3)
        with sink.lock:
            blobs = list(sink.messages)
        ids = harness.message_ids(blobs)
        counts = collections.Counter(ids)
        lost = sorted(m for m in accepted if counts[m] == 0)
        T.check(not lost, f"every one of the {len(accepted)} relayed messages that got 250 reached the next hop", f"{len(lost)} lost: {lost[:5]}")
        torn = [i for b, i in zip(blobs, ids) if i is None or f"END-OF-MESSAGE {i}".encode() not in b]
        T.check(not torn, f"all {len(blobs)} relayed messages are complete", f"{len(torn)} torn")
        extra = sum(c - 1 for c in counts.values() if c > 1)
        T.check(extra <= KILLS * SLOTS, f"duplicates only from deliveries in flight: {extra} (limit {KILLS * SLOTS})")
        T.check(d.stop() == 0, "a clean stop at the end")
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
        sink.shutdown()
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
