//! Measures the queue: accept throughput with group commit at several thread counts, and
//! the time to open (recover) a large spool, list it and replay every journal.
//!
//! Usage: `cargo run --release -p cursus-queue --example queue-bench -- [N] [THREADS,...]
//! [RECOVER]` (defaults 5000, 1,8 and 200000; RECOVER 0 skips the recovery part). Spools
//! are temporary directories under $TMPDIR, removed at the end. Trusts nothing; panics with
//! a message on any error, which is fine for a benchmark.

use std::sync::Arc;
use std::time::Instant;

use cursus_mail::Sender;
use cursus_queue::{Envelope, Options, Queue, Recipient};

fn envelope() -> Envelope {
    Envelope::new(
        Sender::Address("sender@example.org".into()),
        vec![Recipient::new("rcpt@example.net")],
    )
}

/// 2 KB, like smtp-source -l 2000.
fn message() -> Vec<u8> {
    let mut m =
        b"From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < 2048 - 2 {
        m.push(b'x');
        if m.len().is_multiple_of(78) {
            m.extend_from_slice(b"\r\n");
        }
    }
    m.truncate(2046);
    m.extend_from_slice(b"\r\n");
    m
}

fn accept_run(n: usize, threads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(Queue::open(dir.path()).expect("opens"));
    let body = Arc::new(message());
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let queue = Arc::clone(&queue);
            let body = Arc::clone(&body);
            let count = n / threads + usize::from(t < n % threads);
            std::thread::spawn(move || {
                let env = envelope();
                for _ in 0..count {
                    queue.accept(&env, &body[..]).expect("accepts");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = queue.stats();
    let per = |x: u64| x as f64 / s.accepted as f64;
    println!(
        "accept  n={n} threads={threads}: {:.0} msg/s ({elapsed:.2} s); per message: \
         {:.2} file fdatasync + {:.3} dir fsync = {:.2} syncs",
        s.accepted as f64 / elapsed,
        per(s.file_syncs),
        per(s.dir_syncs),
        per(s.file_syncs + s.dir_syncs),
    );
}

fn recover_run(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // Fill without syncs (a benchmark fixture, not a durability claim).
        let queue = Arc::new(
            Queue::open_with(
                dir.path(),
                Options {
                    sync: false,
                    ..Options::default()
                },
            )
            .expect("opens"),
        );
        let started = Instant::now();
        let body = Arc::new(message());
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let queue = Arc::clone(&queue);
                let body = Arc::clone(&body);
                std::thread::spawn(move || {
                    let env = envelope();
                    for _ in 0..(n / 2 + usize::from(t < n % 2)) {
                        queue.accept(&env, &body[..]).expect("accepts");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        println!(
            "fill    n={n}: {:.1} s (unsynced)",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let queue = Queue::open(dir.path()).expect("reopens");
    println!(
        "open    n={}: {:.2} s (directory scan of 256 buckets, orphans removed)",
        queue.recovery().messages,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let first = queue.list().take(20).count();
    println!(
        "list    first {first}: {:.4} s (streams; no journal read beyond those)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let loaded = queue.load_all().expect("loads");
    println!(
        "replay  n={loaded}: {:.2} s (every journal read, sizes checked; warm cache)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let due = queue.due(jiff::Timestamp::now()).count();
    println!(
        "due     n={due}: {:.2} s (all loaded: one pass over the timeline)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    drop(queue);
    drop(dir);
    println!("cleanup: {:.1} s", started.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let threads: Vec<usize> = args
        .get(1)
        .map(|a| a.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8]);
    let recover: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    for t in threads {
        accept_run(n, t);
    }
    if recover > 0 {
        recover_run(recover);
    }
}
