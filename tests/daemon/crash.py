#!/usr/bin/env python3
"""kill -9 cursusd repeatedly under load; no message that got 250 may be lost.

Four sender threads send messages without pause, each with a unique Message-ID and an
end marker, over SMTP (smtplib), recording which got 250 at the end of DATA. The daemon is
killed with SIGKILL KILLS times at random moments and restarted each time (its recovery
runs by itself). At the end the senders stop, the queue drains, and the Maildir must hold:
- every Message-ID that got 250, at least once;
- each message complete (its end marker present): nothing torn is ever in new/ or cur/;
- duplicates only from deliveries in flight at a kill: at most KILLS x 16 (the daemon's
  delivery slots) -- the count is printed;
- messages whose 250 never arrived (the connection died first) may or may not be there.

usage: python3 tests/daemon/crash.py [KILLS]
"""

import collections
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

T = harness.Tally("crash")
KILLS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
THREADS = 4
SLOTS = 16  # concurrent first attempts in cursusd (daemon.rs)
PAUSE = 0.01  # between messages of one sender: bounds the run on a fast machine


def main():
    d = harness.Daemon("crash")
    ok = False
    try:
        d.start()
        senders = harness.Senders(d.port, "crash@localhost", "crash", THREADS, PAUSE)
        senders.start()
        rng = random.Random(os.environ.get("CRASH_SEED", str(time.time())))
        for k in range(KILLS):
            time.sleep(rng.uniform(0.4, 1.4))
            before = len(senders.accepted)
            d.kill9()
            time.sleep(rng.uniform(0.0, 0.3))
            t0 = time.monotonic()
            d.start()
            print(f"kill {k + 1}/{KILLS}: {before} accepted so far; restarted in {time.monotonic() - t0:.1f} s", flush=True)
        time.sleep(1.0)
        t0 = time.monotonic()
        senders.join()
        print(f"senders stopped in {time.monotonic() - t0:.1f} s", flush=True)
        accepted, unknown = senders.accepted, senders.unknown
        T.check(len(accepted) >= 50, f"senders got {len(accepted)} messages accepted (250) across {KILLS} kills")
        t0 = time.monotonic()
        drained = d.wait_queue_empty(60)
        T.check(drained, f"the queue drains after the last restart ({time.monotonic() - t0:.1f} s)")
        time.sleep(0.3)
        blobs = d.messages("crash")
        ids = harness.message_ids(blobs)
        counts = collections.Counter(ids)
        lost = sorted(m for m in accepted if counts[m] == 0)
        T.check(not lost, f"every one of the {len(accepted)} messages that got 250 is delivered", f"{len(lost)} lost: {lost[:5]}")
        torn = [i for b, i in zip(blobs, ids) if i is None or f"END-OF-MESSAGE {i}".encode() not in b]
        T.check(not torn, f"all {len(blobs)} delivered messages are complete", f"{len(torn)} torn")
        dups = {m: c for m, c in counts.items() if c > 1}
        extra = sum(c - 1 for c in dups.values())
        T.check(
            extra <= KILLS * SLOTS,
            f"duplicates only from deliveries in flight: {extra} extra copies of {len(dups)} messages (limit {KILLS * SLOTS})",
            str(sorted(dups.items())[:5]),
        )
        strangers = [i for i in counts if i not in accepted and i not in unknown]
        T.check(not strangers, "nothing delivered that was never sent", str(strangers[:5]))
        came = sum(1 for m in unknown if counts[m] > 0)
        print(
            f"summary: {len(accepted)} accepted, {len(unknown)} without a final reply ({came} of them delivered), "
            f"{len(blobs)} files, {extra} duplicates, refusals {dict(senders.refused)}",
            flush=True,
        )
        tmp = os.path.join(d.maildir("crash"), "tmp")
        left = os.listdir(tmp) if os.path.isdir(tmp) else []
        print(f"note: {len(left)} file(s) left in Maildir/tmp by killed deliveries (Maildir readers ignore tmp/)")
        # The independent checker on a copy without tmp/ (what a killed delivery may leave
        # there is not mail): names, S= sizes and every message parsed without defects.
        copy = os.path.join(d.base, "check-copy")
        shutil.copytree(d.maildir("crash"), copy, ignore=lambda dirpath, names: names if dirpath.endswith("/tmp") else [])
        r = harness.validate_maildir(copy, len(blobs))
        if r is not None:
            T.check(r[0], f"validate_maildir.py on the {len(blobs)} delivered messages", r[1][-500:])
        recovered = [l for l in d.log_text().splitlines() if "recovered:" in l]
        print("recovery lines:\n  " + "\n  ".join(recovered))
        T.check(d.stop() == 0, "a clean stop at the end")
        T.check("panicked" not in d.log_text(), "no panic in the daemon's log")
        ok = not T.failed
    finally:
        d.cleanup(keep=not ok)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
