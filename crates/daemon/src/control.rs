//! The control socket: `<data_dir>/control.sock`, where `cursus queue` asks the running
//! daemon to hold, release, delete or retry queued messages (the queue's lock belongs to
//! the daemon, so an administrator's command goes through it rather than beside it).
//!
//! Protocol: one command per line (`hold ID...`, `release ID...`, `delete ID...`,
//! `flush [ID...]`, `ping`), one answer line each: `ok TEXT` or `error TEXT`. Lines longer
//! than 4 KiB end the connection.
//!
//! Trusts only the peer's kernel-reported uid: root or the daemon's own uid (SO_PEERCRED).
//! The socket is created 0600 as a second fence; the peer check is what stops a local user
//! from deleting other people's mail (attack: any local account holding or removing queued
//! messages). Queue ids are parsed by the queue, so a crafted id cannot name a path.

use std::sync::Arc;

use cursus_queue::{Queue, QueueId};
use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::log;

/// Longest command line accepted.
const MAX_LINE: usize = 4096;

/// What the control socket needs from the daemon.
pub struct Control {
    pub queue: Arc<Queue>,
    pub engine: Arc<Engine>,
    /// Delivery slots shared with the first attempts and the queue manager.
    pub slots: Arc<Semaphore>,
    /// The uid besides root allowed to connect: the daemon's own.
    pub owner: u32,
}

/// Accepts control connections until the listener fails.
pub async fn serve(control: Arc<Control>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if !uid.is_some_and(|u| u == 0 || u == control.owner) {
            log::line(&format!(
                "control: refused a connection from uid {}",
                uid.map_or("unknown".to_string(), |u| u.to_string())
            ));
            continue;
        }
        let control = control.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read.take(1 << 20)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.len() > MAX_LINE {
                    let _ = write.write_all(b"error line too long\n").await;
                    return;
                }
                let answer = control.command(&line).await;
                log::line(&format!("control: {line}: {answer}"));
                if write
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

impl Control {
    /// Runs one command line and returns its answer line.
    pub async fn command(&self, line: &str) -> String {
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or("");
        let mut ids = Vec::new();
        for w in words {
            match w.parse::<QueueId>() {
                Ok(id) => ids.push(id),
                Err(_) => return format!("error {w}: not a queue id"),
            }
        }
        match verb {
            "ping" => "ok cursusd".to_string(),
            "hold" | "release" | "delete" => {
                if ids.is_empty() {
                    return format!("error {verb} needs at least one queue id");
                }
                let queue = self.queue.clone();
                let verb_owned = verb.to_string();
                let ids_owned = ids.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let now = Timestamp::now();
                    let mut done = Vec::new();
                    for id in ids_owned {
                        let r = match verb_owned.as_str() {
                            "hold" => queue.hold(id, now).map(|_| ()),
                            "release" => queue.release(id, now).map(|_| ()),
                            _ => queue.delete(id, now),
                        };
                        if let Err(e) = r {
                            return Err(format!("{id}: {e}"));
                        }
                        done.push(id);
                    }
                    Ok(done)
                })
                .await;
                match result {
                    Ok(Ok(done)) => {
                        if verb == "release" {
                            for id in &done {
                                self.spawn_attempt(*id, true).await;
                            }
                        }
                        format!("ok {verb}: {}", join(&done))
                    }
                    Ok(Err(e)) => format!("error {e}"),
                    Err(e) => format!("error {e}"),
                }
            }
            "flush" => {
                if ids.is_empty() {
                    let queue = self.queue.clone();
                    ids = tokio::task::spawn_blocking(move || {
                        queue
                            .list()
                            .filter_map(|m| m.ok())
                            .filter(|m| !m.held)
                            .map(|m| m.id)
                            .collect::<Vec<_>>()
                    })
                    .await
                    .unwrap_or_default();
                }
                let n = ids.len();
                for id in ids {
                    self.spawn_attempt(id, true).await;
                }
                format!("ok flush: {n} message(s) being tried")
            }
            "" => "error empty command".to_string(),
            other => {
                format!("error unknown command {other:?} (hold, release, delete, flush, ping)")
            }
        }
    }

    async fn spawn_attempt(&self, id: QueueId, force: bool) {
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            engine.attempt_with(id, force);
            drop(permit);
        });
    }
}

fn join(ids: &[QueueId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `showq` socket (`<data_dir>/showq.sock`, mode 0666): any local user connects and
/// reads the queue listing, as `mailq` prints it, then the daemon closes. For users who
/// cannot read the spool (system mode: it is the daemon's, 0700), as Postfix's showq
/// service; like Postfix's default, every local user may list the queue. At most two
/// listings are made at once (attack: a user looping on the socket to keep the disk busy).
pub async fn serve_showq(queue_root: std::path::PathBuf, listener: UnixListener) {
    let busy = Arc::new(Semaphore::new(2));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = busy.clone().acquire_owned().await else {
            return;
        };
        let root = queue_root.clone();
        // The listing is written as the spool is read, from a blocking thread onto the
        // socket made blocking, so a large queue is never held in memory; a reader that
        // stops reading for a minute is dropped.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        tokio::task::spawn_blocking(move || {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(60)));
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, &stream);
            if let Err(e) = cursus_queue::mailq::write(&root, &mut out) {
                let _ = std::io::Write::write_fmt(
                    &mut out,
                    format_args!("cursusd: cannot list the queue: {e}\n"),
                );
            }
            drop(out);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            drop(permit);
        });
    }
}
