//! The hidden `cursus sieve bench`: compile time and evaluations per second of one script
//! against one message, in this process, on one core (bench/sieve-bench.sh drives it).
//!
//! Trusts the caller's script and message as benchmark inputs; they still go through the
//! interpreter's limits. A script that does not compile or fails at run time is an error
//! (a benchmark of the failure path would mislead). Prints `key=value` lines for scripts.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cursus_sieve::{Config, Outcome};

use crate::cli::EnvelopeArgs;
use crate::host::CommandLineHost;
use crate::sieve_test::envelope;

/// What one benchmark measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Script size in bytes.
    pub script_bytes: usize,
    /// Message size in bytes.
    pub message_bytes: usize,
    /// Timed compiles.
    pub compiles: u64,
    /// Median compile time.
    pub compile_median: Duration,
    /// Timed evaluations.
    pub evaluations: u64,
    /// Wall time of all timed evaluations.
    pub evaluate_total: Duration,
    /// Time this thread spent on a CPU during them (Linux schedstat), when known: on a
    /// busy machine wall time also counts the other processes' turns.
    pub evaluate_cpu: Option<Duration>,
    /// The outcome of the last evaluation, to show what was measured.
    pub outcome: Outcome,
}

impl BenchResult {
    /// Evaluations per second.
    pub fn per_second(&self) -> f64 {
        self.evaluations as f64 / self.evaluate_total.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `key=value` report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let per_eval_us =
            self.evaluate_total.as_secs_f64() * 1e6 / (self.evaluations.max(1) as f64);
        let _ = writeln!(out, "script_bytes={}", self.script_bytes);
        let _ = writeln!(out, "message_bytes={}", self.message_bytes);
        let _ = writeln!(out, "compiles={}", self.compiles);
        let _ = writeln!(
            out,
            "compile_median_us={:.1}",
            self.compile_median.as_secs_f64() * 1e6
        );
        let _ = writeln!(out, "evaluations={}", self.evaluations);
        let _ = writeln!(
            out,
            "evaluate_total_s={:.3}",
            self.evaluate_total.as_secs_f64()
        );
        let _ = writeln!(out, "evaluate_us={per_eval_us:.2}");
        let _ = writeln!(out, "evaluations_per_second={:.0}", self.per_second());
        if let Some(cpu) = self.evaluate_cpu {
            let per_cpu_second = self.evaluations as f64 / cpu.as_secs_f64().max(f64::MIN_POSITIVE);
            let _ = writeln!(out, "evaluate_cpu_s={:.3}", cpu.as_secs_f64());
            let _ = writeln!(out, "evaluations_per_cpu_second={per_cpu_second:.0}");
        }
        let actions: Vec<String> = self
            .outcome
            .actions
            .iter()
            .map(|a| match a {
                cursus_sieve::Action::FileInto { mailbox, .. } => format!("store:{mailbox}"),
                other => other.name().to_string(),
            })
            .collect();
        let _ = writeln!(out, "actions={}", actions.join(","));
        out
    }
}

/// Nanoseconds this thread has run on a CPU (the first field of schedstat); `None` where
/// the kernel does not say.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures compiles and evaluations of `script` against `message`.
pub fn measure(
    script: &[u8],
    message: &[u8],
    args: &EnvelopeArgs,
    compiles: u64,
    evaluations: u64,
) -> Result<BenchResult, String> {
    let config = Config::default();
    let compiled = cursus_sieve::compile(script, &config).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(usize::try_from(compiles).unwrap_or(0));
    for _ in 0..compiles.max(1) {
        let start = Instant::now();
        let s = cursus_sieve::compile(black_box(script), &config).map_err(|e| e.to_string())?;
        times.push(start.elapsed());
        black_box(s);
    }
    times.sort();
    let compile_median = times.get(times.len() / 2).copied().unwrap_or_default();

    let envelope = envelope(args, message);
    let mut host = CommandLineHost::new(args.mailbox_exists.clone());
    let once = |host: &mut CommandLineHost| {
        cursus_sieve::evaluate(
            &compiled,
            &config,
            host,
            black_box(&envelope),
            black_box(message),
        )
        .map_err(|e| e.to_string())
    };
    // Warm the caches and the allocator before timing.
    let mut outcome = once(&mut host)?;
    for _ in 0..(evaluations / 20).min(10_000) {
        black_box(once(&mut host)?);
    }
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    for _ in 0..evaluations {
        outcome = black_box(once(&mut host)?);
    }
    let evaluate_total = start.elapsed();
    let evaluate_cpu = cpu_start
        .zip(thread_cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    Ok(BenchResult {
        script_bytes: script.len(),
        message_bytes: message.len(),
        compiles: compiles.max(1),
        compile_median,
        evaluations,
        evaluate_total,
        evaluate_cpu,
        outcome,
    })
}
