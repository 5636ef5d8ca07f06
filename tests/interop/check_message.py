#!/usr/bin/env python3
"""Find one delivered message in a Maildir folder by a marker and check it.

usage: check_message.py MAILDIR MARKER [options]
  MAILDIR       a Maildir or Maildir++ folder (has new/ cur/ tmp/)
  MARKER        a byte string that occurs in exactly one message (e.g. its Message-ID)
  --expect FILE the message as submitted: its body must be byte-identical to the stored
                body and its header lines must appear, in order, in the stored header
  --return-path VALUE   exactly one Return-Path header, equal to VALUE (e.g. "<a@b>", "<>")
  --delivered-to VALUE  exactly one Delivered-To header, equal to VALUE
  --once NAME   header NAME present exactly once (repeatable)
Prints one line per problem; exits 1 if there is any, 0 otherwise.
"""
import os
import sys


def header_block(raw):
    end = raw.find(b"\n\n")
    if end < 0:
        return raw, b""
    return raw[: end + 1], raw[end + 2 :]


def unfolded(head):
    """Header fields as (name-lower, value-stripped, raw-bytes) with continuation lines joined."""
    fields = []
    for line in head.split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            n, v, r = fields[-1]
            fields[-1] = (n, v + b" " + line.strip(), r + b"\n" + line)
            continue
        name, _, value = line.partition(b":")
        fields.append((name.strip().lower(), value.strip(), line))
    return fields


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        return 2
    md, marker = args[0], args[1].encode()
    opts = args[2:]
    expect = rp = dt = None
    once = []
    i = 0
    while i < len(opts):
        o, v = opts[i], opts[i + 1]
        i += 2
        if o == "--expect":
            expect = open(v, "rb").read()
        elif o == "--return-path":
            rp = v.encode()
        elif o == "--delivered-to":
            dt = v.encode()
        elif o == "--once":
            once.append(v.lower().encode())
        else:
            print(f"unknown option {o}")
            return 2

    hits = []
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                raw = f.read()
            if marker in raw:
                hits.append((p, raw))
    errs = []
    if len(hits) != 1:
        print(f"{md}: {len(hits)} messages contain {marker.decode()!r} (want 1)")
        return 1
    path, raw = hits[0]
    head, body = header_block(raw)
    fields = unfolded(head)
    if raw.startswith(b"From "):
        errs.append("stored message starts with a From_ line")
    if b"\r\n" in raw:
        errs.append("stored message contains CRLF")
    if expect is not None:
        exp = expect.replace(b"\r\n", b"\n")
        ehead, ebody = header_block(exp)
        if body != ebody:
            k = next((j for j in range(min(len(body), len(ebody))) if body[j] != ebody[j]),
                     min(len(body), len(ebody)))
            errs.append(f"body differs from the submitted one at byte {k} "
                        f"(stored {len(body)} bytes, submitted {len(ebody)}): "
                        f"stored {body[k:k+40]!r} submitted {ebody[k:k+40]!r}")
        # every submitted header line appears, in order, in the stored header
        stored = [f[2] for f in fields]
        pos = 0
        for ef in unfolded(ehead):
            try:
                pos = stored.index(ef[2], pos) + 1
            except ValueError:
                errs.append(f"submitted header line missing or reordered: {ef[2][:60]!r}")
                break
    def count(name):
        return [f[1] for f in fields if f[0] == name]
    if rp is not None:
        v = count(b"return-path")
        if v != [rp]:
            errs.append(f"Return-Path headers {[x.decode('latin1') for x in v]} (want exactly [{rp.decode()}])")
    if dt is not None:
        v = count(b"delivered-to")
        if [x.lower() for x in v] != [dt.lower()]:
            errs.append(f"Delivered-To headers {[x.decode('latin1') for x in v]} (want exactly [{dt.decode()}])")
    for name in once:
        v = count(name)
        if len(v) != 1:
            errs.append(f"{name.decode()} present {len(v)} times (want 1)")
    for e in errs:
        print(f"{path}: {e}")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
