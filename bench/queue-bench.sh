#!/usr/bin/env bash
# cursus-queue: accept throughput with group commit (1 and 8 threads by default) and the time
# to open, list and replay a large spool. Spools go to $TMPDIR (use the file system the real
# spool will live on: the numbers are fsync-bound).
#
#   bash bench/queue-bench.sh                 # N=5000, threads 1,8, recovery of 200000
#   bash bench/queue-bench.sh 2000 1,4 0      # quicker, no recovery part
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cursus-queue --example queue-bench
exec target/release/examples/queue-bench "${1:-5000}" "${2:-1,8}" "${3:-200000}"
