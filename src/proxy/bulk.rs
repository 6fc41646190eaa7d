//! Bulk loads on the request path: the engine's body is read whole (bounded by
//! `server.max_counted_body_bytes`) so its records can be counted before anything is reserved,
//! and the target's 2xx answer is read to count the records it created. These are the only
//! bodies tollgate reads; every other body streams.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::upstream::{EngineBody, EngineBodyError, UpstreamBody};

/// Why a bulk load's body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Larger than `server.max_counted_body_bytes` (413).
    #[error("the body of a bulk load is larger than server.max_counted_body_bytes ({limit} bytes){}", declared.map(|n| format!(": Content-Length is {n}")).unwrap_or_default())]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The length the request declared, if it declared one.
        declared: Option<u64>,
    },
    /// The engine's body failed (malformed: 400; stalled: 408).
    #[error(transparent)]
    Body(EngineBodyError),
}

/// Bytes read frame by frame; the usual body is one frame, kept as it is without a copy.
#[derive(Default)]
struct Gathered {
    first: Option<Bytes>,
    more: BytesMut,
}

impl Gathered {
    /// Adds a frame's data; returns the length gathered so far.
    fn push(&mut self, data: Bytes) -> usize {
        match self.first.take() {
            None if self.more.is_empty() => self.first = Some(data),
            None => self.more.extend_from_slice(&data),
            Some(earlier) => {
                self.more.extend_from_slice(&earlier);
                self.more.extend_from_slice(&data);
            }
        }
        self.first.as_ref().map_or(self.more.len(), Bytes::len)
    }

    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.more.freeze())
    }
}

/// Reads a bulk load's request body whole: refused by its declared length before a byte is
/// read, or once more than `limit` bytes arrived.
pub(super) async fn read_request(
    mut body: EngineBody,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let too_large = || ReadError::TooLarge { limit, declared };
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut gathered = Gathered::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Body)?.into_data() else {
            continue;
        };
        if gathered.push(data) > limit {
            return Err(too_large());
        }
    }
    Ok(gathered.into_bytes())
}

/// A target's answer to a bulk load, as far as it could be read.
#[derive(Debug)]
pub(super) enum Answer {
    /// All of it.
    Whole(Bytes),
    /// Larger than the limit: what was read, and the rest still to stream.
    TooLarge {
        /// The bytes read.
        read: Bytes,
        /// The rest of the body.
        rest: UpstreamBody,
    },
    /// The body broke off (or stalled past the timeout) after the target accepted the load.
    Broken(String),
}

/// Reads a target's answer whole, up to `limit` bytes, allowing `timeout` for all of it.
pub(super) async fn read_answer(mut body: UpstreamBody, limit: usize, timeout: Duration) -> Answer {
    let mut gathered = Gathered::default();
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|err| err.to_string())?.into_data() else {
                continue;
            };
            if gathered.push(data) > limit {
                return Ok(false);
            }
        }
        Ok::<_, String>(true)
    };
    let outcome = tokio::time::timeout(timeout, reading).await;
    match outcome {
        Ok(Ok(true)) => Answer::Whole(gathered.into_bytes()),
        Ok(Ok(false)) => Answer::TooLarge {
            read: gathered.into_bytes(),
            rest: body,
        },
        Ok(Err(why)) => Answer::Broken(why),
        Err(_) => Answer::Broken(format!(
            "the answer did not arrive whole within {} ms",
            timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_frames_keep_their_order_and_one_frame_is_not_copied() {
        let one = Bytes::from_static(b"{\"records\":[1]}");
        let mut gathered = Gathered::default();
        assert_eq!(gathered.push(one.clone()), one.len());
        let kept = gathered.into_bytes();
        assert_eq!(kept.as_ptr(), one.as_ptr(), "no copy of a single frame");
        let mut gathered = Gathered::default();
        for part in ["{\"rec", "ords\":", "[1,2]}"] {
            gathered.push(Bytes::from_static(part.as_bytes()));
        }
        assert_eq!(&gathered.into_bytes()[..], b"{\"records\":[1,2]}");
    }
}
