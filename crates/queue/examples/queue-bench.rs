//! Measures the queue: accept throughput with group commit at several thread counts, and
//! the time to open (recover) a large spool, list it and replay every journal.
//!
//! Usage: `cargo run --release -p cursus-queue --example queue-bench -- [N] [THREADS,...]
//! [RECOVER]` (defaults 5000, 1,8 and 200000; RECOVER 0 skips the recovery part). Spools
//! are temporary directories under $TMPDIR, removed at the end. With QUEUE_BENCH_COLD set
//! (root only) the page cache is emptied before the open, the replay and the listing.
//! Trusts nothing; panics with a message on any error, which is fine for a benchmark.

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
    // QUEUE_BENCH_SPOOL: a spool kept between runs (filled when it has no journal yet), so
    // that warm and cold figures, and a daemon's start, can be measured on one fixture.
    let kept = std::env::var_os("QUEUE_BENCH_SPOOL").map(std::path::PathBuf::from);
    let temporary = match kept {
        Some(_) => None,
        None => Some(tempfile::tempdir().expect("tempdir")),
    };
    let root = kept
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("made").path().to_path_buf());
    let filled = kept.is_some() && Queue::open(&root).is_ok_and(|q| q.recovery().messages > 0);
    let dir = root.as_path();
    if !filled {
        // Fill without syncs (a benchmark fixture, not a durability claim).
        let queue = Arc::new(
            Queue::open_with(
                dir,
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
    let cold = std::env::var_os("QUEUE_BENCH_COLD").is_some();
    if cold {
        drop_caches();
    }
    let started = Instant::now();
    let queue = Queue::open(dir).expect("reopens");
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
    if cold {
        drop_caches();
    }
    let started = Instant::now();
    let loaded = queue.load_all().expect("loads");
    println!(
        "replay  n={loaded}: {:.2} s (every journal read, sizes checked; {} cache)",
        started.elapsed().as_secs_f64(),
        if cold { "cold" } else { "warm" }
    );
    let started = Instant::now();
    let due = queue.due(jiff::Timestamp::now()).count();
    println!(
        "due     n={due}: {:.2} s (all loaded: one pass over the timeline)",
        started.elapsed().as_secs_f64()
    );
    if cold {
        drop_caches();
    }
    let mut sink = FirstWrite::default();
    let started = Instant::now();
    let listed = cursus_queue::mailq::write(dir, &mut sink).expect("lists");
    println!(
        "mailq   n={listed}: first line after {:.4} s, all {:.2} s, {} MB written ({} cache)",
        sink.first.map_or(0.0, |t| (t - started).as_secs_f64()),
        started.elapsed().as_secs_f64(),
        sink.bytes / 1_000_000,
        if cold { "cold" } else { "warm" }
    );
    let started = Instant::now();
    drop(queue);
    drop(temporary);
    println!("cleanup: {:.1} s", started.elapsed().as_secs_f64());
}

/// A sink that notes when the listing's first bytes came.
#[derive(Default)]
struct FirstWrite {
    first: Option<Instant>,
    bytes: usize,
}

impl std::io::Write for FirstWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.first.get_or_insert_with(Instant::now);
        self.bytes += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Empties the page cache (root only), for the cold-cache figures.
fn drop_caches() {
    // Written-back pages first, so that dropping the cache drops them too.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").expect("drop_caches (root only)");
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
