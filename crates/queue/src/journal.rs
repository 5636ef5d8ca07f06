//! The per-message journal: an append-only file of checksummed records whose first record
//! is the envelope; replaying it gives the message's state.
//!
//! Frame: `len: u32 LE | crc: u32 LE | payload (len bytes)`, with `crc = CRC-32(len bytes ++
//! payload)` and `1 <= len <= MAX_RECORD`. Payloads start with a tag byte (see [`Record`]).
//!
//! Trusts nothing it reads. How it fails, and which crash each rule covers:
//! - A crash in the middle of an append leaves a torn last record (short, or with the right
//!   length and stale or zeroed bytes): its length runs past the end or its checksum does not
//!   match, replay stops there and reports how many bytes were good, and the writer cuts the
//!   file back to that length before its next append so that no later record hides behind
//!   garbage. A zero-filled tail (a file size extended before its data reached the disk)
//!   cannot pass: length 0 is refused and the checksum covers the length.
//! - The envelope record is written, synced and only then renamed into place (`spool.rs`),
//!   so a journal whose first record does not replay is corruption, not a crash: replay
//!   returns an error and the spool quarantines the files rather than deleting mail.
//! - A state change is one record, written with one `write` and made durable with
//!   `fdatasync` before the caller hears it succeeded: outcomes for several recipients of
//!   one transaction land together or not at all.
//! - Records are never rewritten in place, so a crash cannot damage what was already there.

use cursus_mail::EnhancedStatus;
use jiff::Timestamp;

use crate::codec::{DecodeError, Invalid, Reader, Writer};
use crate::crc::Crc32;
use crate::envelope::Envelope;
use crate::id::QueueId;
use crate::state::{QueuedMessage, RecipientState, Relay};

/// The largest payload written or read (an envelope with thousands of recipients fits).
pub const MAX_RECORD: usize = 16 << 20;
/// Bytes before the payload.
pub const FRAME_HEADER: usize = 8;
/// Version of the envelope record's layout.
const VERSION: u8 = 1;

const TAG_ENVELOPE: u8 = b'E';
const TAG_OUTCOMES: u8 = b'A';
const TAG_HOLD: u8 = b'H';
const TAG_RELEASE: u8 = b'R';
const TAG_DSN: u8 = b'N';
const TAG_DELETE: u8 = b'X';

/// What happened to one recipient in one attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Delivered {
        status: EnhancedStatus,
        text: String,
    },
    Deferred {
        status: EnhancedStatus,
        text: String,
        attempts: u32,
        next: Timestamp,
    },
    Failed {
        status: EnhancedStatus,
        text: String,
    },
    /// Delivered to another server (RFC 3461 §4.2): with `dsn_passed`, one that took the
    /// DSN request on.
    Relayed {
        status: EnhancedStatus,
        text: String,
        dsn_passed: bool,
    },
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Always first: who the message is, how big its file is, and its envelope.
    Envelope {
        id: QueueId,
        size: u64,
        envelope: Envelope,
    },
    /// The outcomes of one attempt (one transaction may cover several recipients).
    Outcomes {
        at: Timestamp,
        changes: Vec<(u32, Change)>,
    },
    Hold {
        at: Timestamp,
    },
    Release {
        at: Timestamp,
    },
    /// The DSN for the final recipients was handed on (queued as `dsn`, if any).
    DsnSent {
        at: Timestamp,
        dsn: Option<QueueId>,
    },
    /// Removed by an administrator; recovery completes the removal.
    Delete {
        at: Timestamp,
    },
}

fn put_status(w: &mut Writer, status: EnhancedStatus) {
    w.str(&status.to_string());
}

fn get_status(r: &mut Reader<'_>) -> Result<EnhancedStatus, DecodeError> {
    EnhancedStatus::parse(&r.str()?).ok_or(Invalid("enhanced status"))
}

fn get_time(r: &mut Reader<'_>) -> Result<Timestamp, DecodeError> {
    r.time()
}

impl Record {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Record::Envelope { id, size, envelope } => {
                w.u8(TAG_ENVELOPE).u8(VERSION).u128(id.as_u128()).u64(*size);
                envelope.encode(&mut w);
            }
            Record::Outcomes { at, changes } => {
                w.u8(TAG_OUTCOMES).time(*at);
                w.u32(changes.len() as u32);
                for (index, change) in changes {
                    w.u32(*index);
                    match change {
                        Change::Delivered { status, text } => {
                            w.u8(1);
                            put_status(&mut w, *status);
                            w.str(text);
                        }
                        Change::Deferred {
                            status,
                            text,
                            attempts,
                            next,
                        } => {
                            w.u8(2);
                            put_status(&mut w, *status);
                            w.str(text).u32(*attempts).time(*next);
                        }
                        Change::Failed { status, text } => {
                            w.u8(3);
                            put_status(&mut w, *status);
                            w.str(text);
                        }
                        Change::Relayed {
                            status,
                            text,
                            dsn_passed,
                        } => {
                            w.u8(4);
                            put_status(&mut w, *status);
                            w.str(text).u8(u8::from(*dsn_passed));
                        }
                    }
                }
            }
            Record::Hold { at } => {
                w.u8(TAG_HOLD).time(*at);
            }
            Record::Release { at } => {
                w.u8(TAG_RELEASE).time(*at);
            }
            Record::DsnSent { at, dsn } => {
                w.u8(TAG_DSN).time(*at);
                match dsn {
                    None => w.u8(0),
                    Some(id) => w.u8(1).u128(id.as_u128()),
                };
            }
            Record::Delete { at } => {
                w.u8(TAG_DELETE).time(*at);
            }
        }
        w.bytes
    }

    pub fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader::new(payload);
        let record = match r.u8()? {
            TAG_ENVELOPE => {
                if r.u8()? != VERSION {
                    return Err(Invalid("envelope version"));
                }
                let id = QueueId::from_u128(r.u128()?).ok_or(Invalid("queue id"))?;
                let size = r.u64()?;
                let envelope = Envelope::decode(&mut r)?;
                Record::Envelope { id, size, envelope }
            }
            TAG_OUTCOMES => {
                let at = get_time(&mut r)?;
                let count = r.count(4 + 1 + 4 + 4)?;
                let mut changes = Vec::with_capacity(count);
                for _ in 0..count {
                    let index = r.u32()?;
                    let change = match r.u8()? {
                        1 => Change::Delivered {
                            status: get_status(&mut r)?,
                            text: r.str()?,
                        },
                        2 => Change::Deferred {
                            status: get_status(&mut r)?,
                            text: r.str()?,
                            attempts: r.u32()?,
                            next: get_time(&mut r)?,
                        },
                        3 => Change::Failed {
                            status: get_status(&mut r)?,
                            text: r.str()?,
                        },
                        4 => Change::Relayed {
                            status: get_status(&mut r)?,
                            text: r.str()?,
                            dsn_passed: match r.u8()? {
                                0 => false,
                                1 => true,
                                _ => return Err(Invalid("relay flag")),
                            },
                        },
                        _ => return Err(Invalid("outcome kind")),
                    };
                    changes.push((index, change));
                }
                Record::Outcomes { at, changes }
            }
            TAG_HOLD => Record::Hold {
                at: get_time(&mut r)?,
            },
            TAG_RELEASE => Record::Release {
                at: get_time(&mut r)?,
            },
            TAG_DSN => {
                let at = get_time(&mut r)?;
                let dsn = match r.u8()? {
                    0 => None,
                    1 => Some(QueueId::from_u128(r.u128()?).ok_or(Invalid("queue id"))?),
                    _ => return Err(Invalid("presence byte")),
                };
                Record::DsnSent { at, dsn }
            }
            TAG_DELETE => Record::Delete {
                at: get_time(&mut r)?,
            },
            _ => return Err(Invalid("record tag")),
        };
        r.end()?;
        Ok(record)
    }

    /// The framed bytes: length, checksum, payload.
    pub fn frame(&self) -> Vec<u8> {
        frame(&self.encode())
    }
}

/// Frames a payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = Crc32::new().update(&len).update(payload).finish();
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits journal bytes into the payloads of whole, intact frames. Returns them and the
/// length of the good prefix; anything after it is a torn or damaged tail.
pub fn frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER {
        let len_bytes: [u8; 4] = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_RECORD || bytes.len() - at - FRAME_HEADER < len {
            break;
        }
        let payload = &bytes[at + FRAME_HEADER..at + FRAME_HEADER + len];
        if Crc32::new().update(&len_bytes).update(payload).finish() != crc {
            break;
        }
        out.push(payload);
        at += FRAME_HEADER + len;
    }
    (out, at)
}

/// A replayed journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub message: QueuedMessage,
    /// Bytes of intact records; the file is longer when its tail is torn.
    pub good_len: usize,
}

/// Why a journal cannot be replayed: its first record is missing or wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    NoEnvelope,
    Envelope(DecodeError),
    /// A later record passed its checksum but does not decode or names a recipient the
    /// envelope does not have: written by something else than this code.
    Record {
        offset: usize,
        error: DecodeError,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::NoEnvelope => f.write_str("no intact envelope record"),
            ReplayError::Envelope(e) => write!(f, "envelope record: {e}"),
            ReplayError::Record { offset, error } => write!(f, "record at byte {offset}: {error}"),
        }
    }
}

/// Rebuilds a message's state from its journal bytes.
pub fn replay(bytes: &[u8]) -> Result<Replay, ReplayError> {
    let (payloads, good_len) = frames(bytes);
    let mut payloads = payloads.into_iter();
    let first = payloads.next().ok_or(ReplayError::NoEnvelope)?;
    let (id, size, envelope) = match Record::decode(first).map_err(ReplayError::Envelope)? {
        Record::Envelope { id, size, envelope } => (id, size, envelope),
        _ => return Err(ReplayError::NoEnvelope),
    };
    let recipients = vec![RecipientState::Pending; envelope.recipients.len()];
    let mut message = QueuedMessage {
        id,
        envelope,
        size,
        recipients,
        held: false,
        dsn_sent: None,
        deleted: false,
    };
    let mut offset = FRAME_HEADER + first.len();
    for payload in payloads {
        let record =
            Record::decode(payload).map_err(|error| ReplayError::Record { offset, error })?;
        apply(&mut message, record).map_err(|error| ReplayError::Record { offset, error })?;
        offset += FRAME_HEADER + payload.len();
    }
    Ok(Replay { message, good_len })
}

/// Applies one record to a message's state. Outcomes for a recipient that is already final
/// are ignored (the writer never records them; a duplicate cannot undo a delivery).
pub fn apply(message: &mut QueuedMessage, record: Record) -> Result<(), DecodeError> {
    match record {
        Record::Envelope { .. } => return Err(Invalid("second envelope")),
        Record::Outcomes { at, changes } => {
            for (index, change) in changes {
                let state = message
                    .recipients
                    .get_mut(index as usize)
                    .ok_or(Invalid("recipient index"))?;
                if state.is_final() {
                    continue;
                }
                *state = match change {
                    Change::Delivered { status, text } => RecipientState::Delivered {
                        at,
                        status,
                        text,
                        relay: Relay::No,
                    },
                    Change::Relayed {
                        status,
                        text,
                        dsn_passed,
                    } => RecipientState::Delivered {
                        at,
                        status,
                        text,
                        relay: if dsn_passed {
                            Relay::DsnPassed
                        } else {
                            Relay::WithoutDsn
                        },
                    },
                    Change::Failed { status, text } => RecipientState::Failed { at, status, text },
                    Change::Deferred {
                        status,
                        text,
                        attempts,
                        next,
                    } => RecipientState::Deferred {
                        attempts,
                        last: at,
                        next,
                        status,
                        text,
                    },
                };
            }
        }
        Record::Hold { .. } => message.held = true,
        Record::Release { .. } => message.held = false,
        Record::DsnSent { dsn, .. } => message.dsn_sent = Some(dsn),
        Record::Delete { .. } => message.deleted = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::full;
    use cursus_mail::codes;

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_microsecond(micros).expect("valid time")
    }

    fn sample() -> Vec<Record> {
        let id = QueueId::from_parts(1_700_000_000_000_000, 1, 2);
        vec![
            Record::Envelope {
                id,
                size: 2048,
                envelope: full(),
            },
            Record::Outcomes {
                at: t(1_700_000_001_000_000),
                changes: vec![
                    (
                        0,
                        Change::Delivered {
                            status: codes::DELIVERED,
                            text: "250 ok".into(),
                        },
                    ),
                    (
                        1,
                        Change::Deferred {
                            status: codes::SYSTEM_FULL,
                            text: "over quota".into(),
                            attempts: 1,
                            next: t(1_700_000_301_000_000),
                        },
                    ),
                ],
            },
            Record::Hold {
                at: t(1_700_000_002_000_000),
            },
            Record::Release {
                at: t(1_700_000_003_000_000),
            },
            Record::Outcomes {
                at: t(1_700_000_004_000_000),
                changes: vec![(
                    2,
                    Change::Failed {
                        status: codes::BAD_MAILBOX,
                        text: "no such user".into(),
                    },
                )],
            },
            Record::DsnSent {
                at: t(1_700_000_005_000_000),
                dsn: Some(QueueId::from_parts(9, 9, 9)),
            },
            Record::Delete {
                at: t(1_700_000_006_000_000),
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let relayed = [false, true].map(|dsn_passed| Record::Outcomes {
            at: t(1_700_000_007_000_000),
            changes: vec![(
                0,
                Change::Relayed {
                    status: codes::DELIVERED,
                    text: "mx.example[192.0.2.1]:25: 250 ok".into(),
                    dsn_passed,
                },
            )],
        });
        for record in sample().into_iter().chain(relayed) {
            assert_eq!(Record::decode(&record.encode()), Ok(record.clone()));
        }
    }

    #[test]
    fn replay_builds_the_state() {
        let bytes: Vec<u8> = sample().iter().flat_map(Record::frame).collect();
        let replay = replay(&bytes).expect("replays");
        assert_eq!(replay.good_len, bytes.len());
        let m = replay.message;
        assert!(matches!(m.recipients[0], RecipientState::Delivered { .. }));
        assert!(matches!(
            m.recipients[1],
            RecipientState::Deferred { attempts: 1, .. }
        ));
        assert!(matches!(m.recipients[2], RecipientState::Failed { .. }));
        assert!(!m.held && m.deleted);
        assert_eq!(m.dsn_sent, Some(Some(QueueId::from_parts(9, 9, 9))));
    }

    /// Every cut of the journal replays to the records wholly before the cut: a crash in
    /// the middle of an append loses that record only, never an earlier one.
    #[test]
    fn a_torn_tail_is_ignored_at_every_byte() {
        let records = sample();
        let framed: Vec<Vec<u8>> = records.iter().map(Record::frame).collect();
        let bytes: Vec<u8> = framed.concat();
        let mut boundaries = vec![0usize];
        for f in &framed {
            boundaries.push(boundaries.last().copied().unwrap_or(0) + f.len());
        }
        for cut in 0..=bytes.len() {
            let whole = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
            let result = replay(&bytes[..cut]);
            if whole == 0 {
                assert_eq!(result, Err(ReplayError::NoEnvelope), "cut {cut}");
                continue;
            }
            let got = result.expect("replays");
            assert_eq!(got.good_len, boundaries[whole], "cut {cut}");
            let want: Vec<u8> = framed[..whole].concat();
            assert_eq!(got, replay(&want).expect("prefix replays"));
        }
    }

    #[test]
    fn garbage_tails_are_refused() {
        let mut bytes = sample()[0].frame();
        let good = bytes.len();
        // Zeroes (size extended before the data hit the disk), a stale length, a flipped bit.
        for tail in [vec![0u8; 64], vec![0xFF; 12], {
            let mut f = sample()[2].frame();
            let last = f.len() - 1;
            f[last] ^= 1;
            f
        }] {
            bytes.truncate(good);
            bytes.extend_from_slice(&tail);
            assert_eq!(replay(&bytes).expect("replays").good_len, good);
        }
    }

    #[test]
    fn outcomes_for_final_recipients_do_not_undo_them() {
        let mut records = sample();
        records.truncate(2);
        records.push(Record::Outcomes {
            at: t(1_700_000_009_000_000),
            changes: vec![(
                0,
                Change::Failed {
                    status: codes::BAD_MAILBOX,
                    text: "late".into(),
                },
            )],
        });
        let bytes: Vec<u8> = records.iter().flat_map(Record::frame).collect();
        let m = replay(&bytes).expect("replays").message;
        assert!(matches!(m.recipients[0], RecipientState::Delivered { .. }));
    }

    #[test]
    fn a_bad_recipient_index_is_corruption() {
        let mut records = sample();
        records.truncate(1);
        records.push(Record::Outcomes {
            at: t(1),
            changes: vec![(
                99,
                Change::Delivered {
                    status: codes::DELIVERED,
                    text: String::new(),
                },
            )],
        });
        let bytes: Vec<u8> = records.iter().flat_map(Record::frame).collect();
        assert!(matches!(replay(&bytes), Err(ReplayError::Record { .. })));
    }
}
