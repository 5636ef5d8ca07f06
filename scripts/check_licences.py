#!/usr/bin/env python3
"""Checks `cargo metadata` (JSON on stdin): every crates.io package's declared licence must
be on the allow-list (an SPDX expression passes when one OR-alternative is made only of
allowed ids), and no OpenSSL or aws-lc crate may be in the tree."""
import json
import re
import sys

ALLOWED = {"Apache-2.0", "MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "Zlib",
           "Unicode-3.0", "CDLA-Permissive-2.0", "Apache-2.0 WITH LLVM-exception"}
BANNED = {"openssl", "openssl-sys", "aws-lc-rs", "aws-lc-sys", "native-tls"}


def acceptable(expr):
    expr = expr.replace("/", " OR ").replace("(", " ").replace(")", " ")
    alts = [a.strip() for a in re.split(r"\s+OR\s+", expr) if a.strip()]
    return any(all(p.strip() in ALLOWED for p in re.split(r"\s+AND\s+", a)) for a in alts)


meta = json.load(sys.stdin)
bad = []
external = [p for p in meta["packages"] if p["source"] is not None]
for p in external:
    name, version, lic = p["name"], p["version"], p.get("license") or ""
    if name in BANNED:
        bad.append(f"{name} {version}: banned crate")
    elif not lic or not acceptable(lic):
        bad.append(f"{name} {version}: licence {lic!r} not on the allow-list")
for b in bad:
    print("FAIL", b)
print(f"licences: {len(external) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
