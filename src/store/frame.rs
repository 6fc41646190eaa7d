//! The count journal's frame: one commit batch as bytes, checksummed, so that replay can tell
//! a whole frame from a torn or damaged one.
//!
//! A frame is little-endian and padded with zeros to a multiple of [`ALIGN`] bytes:
//!
//! ```text
//! magic "TGJF" (4) | crc32c of what follows it, up to the end of the payload (4)
//! | seq (u64) | payload length (u32) | payload
//! payload: flags (u8: bit 0 = high-water mark present) | [high-water mark, ms (i64)]
//!          | entries (u32) | entries × { records (u64) | month (u32, year * 12 + month0)
//!          | day (i32, days from 0001-01-01 = 1) | flow (u32 length + UTF-8)
//!          | license (u32 length + UTF-8, or u32::MAX for none) }
//! ```

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::counts::{CountBatch, CountKey};

/// Frames start at multiples of this many bytes (replay looks for frames there).
pub(super) const ALIGN: usize = 8;
/// Bytes before the payload: magic, checksum, sequence number, payload length.
const HEAD: usize = 20;
const MAGIC: [u8; 4] = *b"TGJF";
/// The payload has a high-water mark.
const HAS_HIGH_WATER: u8 = 1;
/// A count without a license (the length that stands for none).
const NO_LICENSE: u32 = u32::MAX;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    /// Its sequence number: frames are numbered 1, 2, … for the life of the store.
    pub seq: u64,
    /// The counts it adds.
    pub counts: CountBatch,
    /// The latest time a count of the frame was made at, for the clock high-water mark.
    pub high_water: Option<DateTime<Utc>>,
}

/// Appends the frame of `counts` to `out`, padded to [`ALIGN`].
pub(super) fn encode(
    seq: u64,
    counts: &CountBatch,
    high_water: Option<DateTime<Utc>>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]); // the checksum, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the payload length, filled in below
    let payload = out.len();
    match high_water {
        Some(at) => {
            out.push(HAS_HIGH_WATER);
            out.extend_from_slice(&at.timestamp_millis().to_le_bytes());
        }
        None => out.push(0),
    }
    put_len(out, counts.len());
    for (key, records) in counts.iter() {
        out.extend_from_slice(&records.to_le_bytes());
        out.extend_from_slice(&key.month.to_le_bytes());
        out.extend_from_slice(&key.day.num_days_from_ce().to_le_bytes());
        put_str(out, &key.flow);
        match &key.license {
            Some(license) => put_str(out, license),
            None => out.extend_from_slice(&NO_LICENSE.to_le_bytes()),
        }
    }
    let len = out.len() - payload;
    out[start + 16..start + HEAD].copy_from_slice(&len_u32(len).to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.resize(out.len().next_multiple_of(ALIGN), 0);
}

/// The frame at the start of `bytes` and its padded length, if a whole, intact frame is there.
pub(super) fn decode(bytes: &[u8]) -> Option<(Frame, usize)> {
    if bytes.get(..4)? != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let len = usize::try_from(u32::from_le_bytes(bytes.get(16..HEAD)?.try_into().ok()?)).ok()?;
    let end = HEAD.checked_add(len)?;
    if crc32c::crc32c(bytes.get(8..end)?) != crc {
        return None;
    }
    let mut payload = Reader(&bytes[HEAD..end]);
    let high_water = match payload.u8()? {
        0 => None,
        HAS_HIGH_WATER => Some(DateTime::from_timestamp_millis(i64::from_le_bytes(
            payload.array()?,
        ))?),
        _ => return None,
    };
    let mut counts = CountBatch::default();
    for _ in 0..u32::from_le_bytes(payload.array()?) {
        let records = u64::from_le_bytes(payload.array()?);
        let month = u32::from_le_bytes(payload.array()?);
        let day = NaiveDate::from_num_days_from_ce_opt(i32::from_le_bytes(payload.array()?))?;
        let flow = payload.str()?;
        let license = match u32::from_le_bytes(payload.array()?) {
            NO_LICENSE => None,
            len => Some(payload.text(usize::try_from(len).ok()?)?),
        };
        counts.add(
            CountKey {
                license,
                flow,
                month,
                day,
            },
            records,
        );
    }
    if !payload.0.is_empty() {
        return None;
    }
    let frame = Frame {
        seq,
        counts,
        high_water,
    };
    Some((frame, end.next_multiple_of(ALIGN)))
}

fn len_u32(len: usize) -> u32 {
    // Frames hold one commit batch: their ids and counts are far below 4 GiB.
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&len_u32(len).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Reads a payload front to back; every read fails (None) past its end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn text(&mut self, len: usize) -> Option<Arc<str>> {
        std::str::from_utf8(self.take(len)?).ok().map(Arc::from)
    }

    fn str(&mut self) -> Option<Arc<str>> {
        let len = usize::try_from(u32::from_le_bytes(self.array()?)).ok()?;
        self.text(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CountBatch {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let mut counts = CountBatch::default();
        let november = 2026 * 12 + 10;
        counts.add(
            CountKey {
                license: Some("LIC-1".into()),
                flow: "incidents".into(),
                month: november,
                day: day(26),
            },
            3,
        );
        counts.add(
            CountKey {
                license: None,
                flow: "ünïcode-flow".into(),
                month: november,
                day: day(30),
            },
            1 << 40,
        );
        counts
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_795_000_000_123).unwrap()
    }

    #[test]
    fn a_frame_decodes_to_what_was_encoded_and_is_padded() {
        for (counts, high_water) in [
            (sample(), Some(at())),
            (sample(), None),
            (CountBatch::default(), Some(at())),
        ] {
            let mut bytes = vec![];
            encode(7, &counts, high_water, &mut bytes);
            assert_eq!(bytes.len() % ALIGN, 0);
            bytes.extend_from_slice(b"whatever follows");
            let (frame, len) = decode(&bytes).expect("an intact frame");
            assert_eq!(len % ALIGN, 0);
            assert_eq!(
                frame,
                Frame {
                    seq: 7,
                    counts,
                    high_water
                }
            );
        }
    }

    #[test]
    fn a_cut_or_changed_frame_is_refused() {
        let mut bytes = vec![];
        encode(1, &sample(), Some(at()), &mut bytes);
        let payload_len = u32::from_le_bytes(bytes[16..HEAD].try_into().unwrap()) as usize;
        let end = HEAD + payload_len;
        for cut in 0..end {
            assert_eq!(decode(&bytes[..cut]), None, "cut to {cut} bytes");
        }
        for at in 0..end {
            for bit in 0..8 {
                let mut changed = bytes.clone();
                changed[at] ^= 1 << bit;
                assert_eq!(decode(&changed), None, "bit {bit} of byte {at} flipped");
            }
        }
    }
}
