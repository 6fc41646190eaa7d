//! The count journal, `state.dir/tollgate.journal`: how strict durability gets a counted load
//! on disk with one write and one `fdatasync` per commit batch.
//!
//! The file is preallocated once (zeros written and synced, so later writes allocate nothing and
//! flush data only; [`super::journal_file`] writes it): a 4 KiB header (magic, version, the store's id, the file's
//! length) and then frames ([`super::frame`]), each one commit batch, numbered 1, 2, … for the
//! life of the store. The writer appends a frame, makes it durable and only then answers the
//! batch's loads. Counts are folded into redb later, in one transaction that also records the number of
//! the last frame it took in (the *folded* mark); after that the next frame goes to the start of
//! the file again, overwriting what was folded.
//!
//! Replay (at open) walks the frames from the start while their numbers follow one another and
//! applies those above the folded mark; a torn or damaged frame ends the walk. Frames from before
//! the last fold can lie further on but carry lower numbers, so they are never applied twice. A
//! valid frame *beyond* the end of the walk with a higher number than the walk expects next means
//! an acknowledged frame in between is damaged: the journal is refused, never silently cut.

use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::counts::CountBatch;
use super::frame::{self, ALIGN};

/// File name of the journal inside `state.dir`.
pub(super) const FILE: &str = "tollgate.journal";
/// Length of a new journal file: frames of a typical batch take under 100 bytes, so this holds
/// tens of thousands of batches between folds.
pub(super) const CAPACITY: usize = 4 << 20;
/// Frames start here; before it is the header.
const HEADER: usize = 4096;
const MAGIC: &[u8; 16] = b"tollgate-journal";
const VERSION: u32 = 1;
/// Bytes of the header that are checksummed: magic, version, store id, length.
const HEADER_FIELDS: usize = 36;

/// Where the journal's bytes live: the file ([`super::journal_file`]), or memory in tests
/// that play crashes.
pub(super) trait Medium: Send {
    /// Every byte, from the start.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Writes `bytes` at `offset` and returns once they are durable. Nothing beyond the end of
    /// `bytes` needs keeping (the medium may zero it up to the end of its block).
    fn write_durably(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
}

/// Why the journal cannot be used, in the operator's terms.
#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    /// The file cannot be read, created or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// The file is not a journal, is cut short, or a frame inside it that was acknowledged is
    /// unreadable.
    #[error("{} is damaged ({detail}); the file is kept as it is: it may hold counts that are not in {} yet, so restore it, or move it away to start without them", path.display(), super::FILE)]
    Damaged {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The journal was written for another store file than the one beside it.
    #[error("{} belongs to another store than {} (was {} replaced?); the file is kept as it is: move it away to start with this store", path.display(), super::FILE, super::FILE)]
    Foreign {
        /// The journal file.
        path: PathBuf,
    },
    /// The journal goes on from a frame the store never took in up to: the store file is older
    /// than the journal.
    #[error("{} does not follow {} (the journal goes on from frame {first}, the store has taken in frames up to {folded}: was {} restored from an older copy?); the file is kept as it is: move it away to start with the store as it is", path.display(), super::FILE, super::FILE)]
    Behind {
        /// The journal file.
        path: PathBuf,
        /// The first frame the journal holds.
        first: u64,
        /// The last frame the store took in.
        folded: u64,
    },
}

/// What replay found in the journal that the store has not taken in yet.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replay {
    /// The counts of those frames, summed.
    pub counts: CountBatch,
    /// The latest high-water mark they carry.
    pub high_water: Option<DateTime<Utc>>,
    /// The number of the last of them, if there was any.
    pub last: Option<u64>,
}

/// The open journal; the store's writer thread owns it.
pub(super) struct Journal {
    medium: Box<dyn Medium>,
    path: PathBuf,
    len: usize,
    /// Where the next frame goes.
    offset: usize,
    /// The number of the next frame.
    next_seq: u64,
    /// The next frame's bytes, kept to save an allocation per batch.
    buf: Vec<u8>,
}

/// The bytes of a new journal: the header, then zeros.
pub(super) fn image(store_id: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len.max(HEADER)];
    bytes[..16].copy_from_slice(MAGIC);
    bytes[16..20].copy_from_slice(&VERSION.to_le_bytes());
    bytes[20..28].copy_from_slice(&store_id.to_le_bytes());
    let len = bytes.len() as u64;
    bytes[28..36].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..HEADER_FIELDS]);
    bytes[HEADER_FIELDS..HEADER_FIELDS + 4].copy_from_slice(&crc.to_le_bytes());
    bytes
}

impl Journal {
    /// Reads the journal of the store `store_id`, which has taken in frames up to `folded`;
    /// returns it, ready for the next frame after the ones replay found, and what those hold.
    pub(super) fn open(
        mut medium: Box<dyn Medium>,
        path: PathBuf,
        store_id: u64,
        folded: u64,
    ) -> Result<(Journal, Replay), JournalError> {
        let bytes = medium.read_all().map_err(|source| JournalError::Io {
            path: path.clone(),
            action: "read",
            source,
        })?;
        let damaged = |detail: String| JournalError::Damaged {
            path: path.clone(),
            detail,
        };
        check_header(&bytes, store_id).map_err(|problem| match problem {
            HeaderProblem::Foreign => JournalError::Foreign { path: path.clone() },
            HeaderProblem::Damaged(detail) => damaged(detail.to_owned()),
        })?;
        let mut replay = Replay::default();
        let mut offset = HEADER;
        let mut last_seen: Option<u64> = None;
        while let Some((frame, len)) = frame::decode(&bytes[offset..]) {
            match last_seen {
                Some(last) if frame.seq != last + 1 => break,
                None if frame.seq > folded + 1 => {
                    return Err(JournalError::Behind {
                        path,
                        first: frame.seq,
                        folded,
                    })
                }
                _ => {}
            }
            if frame.seq > folded {
                replay.counts.merge(&frame.counts);
                replay.high_water = replay.high_water.max(frame.high_water);
                replay.last = Some(frame.seq);
            }
            last_seen = Some(frame.seq);
            offset += len;
        }
        let expected = last_seen.map_or(folded, |last| last.max(folded)) + 1;
        if let Some(beyond) = (offset..bytes.len())
            .step_by(ALIGN)
            .find(|&at| frame::decode(&bytes[at..]).is_some_and(|(frame, _)| frame.seq > expected))
        {
            return Err(damaged(format!(
                "the frame at byte {offset} is unreadable, but the frame at byte {beyond} was written after it"
            )));
        }
        let journal = Journal {
            medium,
            path,
            len: bytes.len(),
            offset: HEADER,
            next_seq: expected,
            buf: Vec::new(),
        };
        // Whatever replay found is folded before the journal is written again (see `reset`).
        Ok((journal, replay))
    }

    /// Writes and syncs one frame of `counts`; returns its number, or `None` when the frame
    /// does not fit in what is left of the file (fold, [`Journal::reset`], and try again).
    pub(super) fn append(
        &mut self,
        counts: &CountBatch,
        high_water: Option<DateTime<Utc>>,
    ) -> Result<Option<u64>, JournalError> {
        self.buf.clear();
        frame::encode(self.next_seq, counts, high_water, &mut self.buf);
        if self.offset + self.buf.len() > self.len {
            return Ok(None);
        }
        // A failed write or sync leaves the offset and number as they were: the next attempt
        // rewrites the same frame (with whatever has been added to it) in the same place.
        self.medium
            .write_durably(self.offset as u64, &self.buf)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                action: "write",
                source,
            })?;
        self.offset += self.buf.len();
        self.next_seq += 1;
        Ok(Some(self.next_seq - 1))
    }

    /// The number of the last frame written (or of the last frame the store had taken in at
    /// open, when none was written since).
    pub(super) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether more than half of the file holds frames since the last reset: time to fold.
    pub(super) fn half_full(&self) -> bool {
        self.offset - HEADER > (self.len - HEADER) / 2
    }

    /// Starts writing at the start of the file again. Only once the store holds every frame
    /// written so far, with [`Journal::last_seq`] as its folded mark: the old frames then all
    /// carry numbers replay skips.
    pub(super) fn reset(&mut self) {
        self.offset = HEADER;
    }
}

enum HeaderProblem {
    Foreign,
    Damaged(&'static str),
}

fn check_header(bytes: &[u8], store_id: u64) -> Result<(), HeaderProblem> {
    let field = |range: std::ops::Range<usize>| &bytes[range];
    if bytes.len() < HEADER || field(0..16) != MAGIC {
        return Err(HeaderProblem::Damaged("it is not a tollgate journal"));
    }
    let crc = u32::from_le_bytes(
        field(HEADER_FIELDS..HEADER_FIELDS + 4)
            .try_into()
            .unwrap_or_default(),
    );
    if crc32c::crc32c(field(0..HEADER_FIELDS)) != crc {
        return Err(HeaderProblem::Damaged("its header is damaged"));
    }
    if field(16..20) != VERSION.to_le_bytes() {
        return Err(HeaderProblem::Damaged("it is of an unknown version"));
    }
    let len = u64::from_le_bytes(field(28..36).try_into().unwrap_or_default());
    if len != bytes.len() as u64 {
        return Err(HeaderProblem::Damaged(if len > bytes.len() as u64 {
            "it is cut short"
        } else {
            "it is longer than its header says"
        }));
    }
    if field(20..28) != store_id.to_le_bytes() {
        return Err(HeaderProblem::Foreign);
    }
    Ok(())
}
