//! Refusing requests whose framing is ambiguous. hyper resolves a request carrying both
//! `Content-Length` and `Transfer-Encoding` the RFC 9112 way (chunked wins, the length is
//! dropped, the connection closes), so by the time the service sees it the conflict is gone.
//! SPEC §5 wants such a request refused with 400 and never forwarded, so each HTTP/1
//! connection's bytes pass through a [`ScanningIo`] that follows the message framing and
//! notes which request head (by sequence number) had both headers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most headers a scanned head may have (hyper's own limit is 100).
const MAX_HEADERS: usize = 128;

/// What a connection's scanner tells the service, shared through the request extensions.
#[derive(Debug, Default)]
pub struct FramingWatch {
    /// Sequence number (1-based) of the first head with both framing headers; 0 if none.
    conflict: AtomicU64,
    /// Requests the service has taken from this connection.
    served: AtomicU64,
}

impl FramingWatch {
    /// Called once per request, in order: whether this request's head had both framing headers.
    pub fn next_request_conflicts(&self) -> bool {
        let sequence = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.conflict.load(Ordering::Relaxed) == sequence
    }

    fn record_conflict(&self, sequence: u64) {
        let _ = self
            .conflict
            .compare_exchange(0, sequence, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkEnd(u8),
    /// Collecting trailer lines after the last chunk.
    Trailers(Vec<u8>),
    /// Not HTTP/1 framing we follow (HTTP/2, upgrades, garbage): stop looking.
    Lost,
}

/// Follows HTTP/1 request framing over the bytes a connection reads.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    heads: u64,
    max_head: usize,
    watch: Arc<FramingWatch>,
}

impl Scanner {
    /// A scanner for one connection; heads longer than `max_head` stop the scan (hyper refuses them).
    pub fn new(max_head: usize, watch: Arc<FramingWatch>) -> Scanner {
        Scanner {
            state: State::Head(Vec::new()),
            heads: 0,
            max_head,
            watch,
        }
    }

    /// Feeds the bytes just read.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Head(buffer) => {
                    // The usual case: a whole head in one read, parsed where it lies, no copy.
                    if buffer.is_empty() {
                        if let Some(i) = find(data, b"\r\n\r\n") {
                            let (head, rest) = data.split_at(i + 4);
                            data = rest;
                            self.state = self.after_head(head);
                            continue;
                        }
                    }
                    let searched = buffer.len().saturating_sub(3);
                    buffer.extend_from_slice(data);
                    let Some(end) =
                        find(&buffer[searched..], b"\r\n\r\n").map(|i| searched + i + 4)
                    else {
                        if buffer.len() > self.max_head {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    let consumed_now = data.len() - (buffer.len() - end);
                    let head = std::mem::take(buffer);
                    data = &data[consumed_now..];
                    self.state = self.after_head(&head[..end]);
                }
                State::Body(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > 4096 {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..=newline]);
                    data = &data[newline + 1..];
                    self.state = match chunk_size(line) {
                        Some(0) => State::Trailers(Vec::new()),
                        Some(size) => State::ChunkData(size),
                        None => State::Lost,
                    };
                }
                State::ChunkData(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    let take = usize::from(*left).min(data.len());
                    *left -= take as u8;
                    data = &data[take..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > self.max_head {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    let blank = line.iter().chain(&data[..newline]).all(|&b| b == b'\r');
                    data = &data[newline + 1..];
                    if blank {
                        self.state = State::Head(Vec::new());
                    } else {
                        line.clear();
                    }
                }
            }
        }
    }

    /// Reads a complete head and decides how its body is framed.
    fn after_head(&mut self, head: &[u8]) -> State {
        // A client may send empty lines before a request line (RFC 9112 §2.2).
        let start = head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(head.len());
        let head = &head[start..];
        if head.is_empty() {
            return State::Head(Vec::new());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return State::Lost;
        }
        self.heads += 1;
        let mut length = None;
        let mut chunked = None;
        let mut upgrade = request.method == Some("CONNECT");
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or(Some(u64::MAX));
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if length.is_some() && chunked.is_some() {
            self.watch.record_conflict(self.heads);
        }
        match (chunked, length) {
            _ if upgrade => State::Lost,
            (Some(true), _) => State::ChunkSize(Vec::new()),
            (Some(false), _) | (None, Some(u64::MAX)) => State::Lost,
            (None, Some(0) | None) => State::Head(Vec::new()),
            (None, Some(length)) => State::Body(length),
        }
    }
}

/// The size on a chunk-size line (hex digits before any `;` extension).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let digits = text.split(';').next()?.trim();
    u64::from_str_radix(digits, 16).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A connection's I/O with a [`Scanner`] watching what is read.
pub struct ScanningIo<S> {
    inner: S,
    scanner: Scanner,
}

impl<S> ScanningIo<S> {
    /// Wraps a connection.
    pub fn new(inner: S, scanner: Scanner) -> ScanningIo<S> {
        ScanningIo { inner, scanner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ScanningIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.scanner.feed(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScanningIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns which requests (1-based) conflicted.
    fn conflicts(stream: &[u8], step: usize, requests: u64) -> Vec<u64> {
        let watch = Arc::new(FramingWatch::default());
        let mut scanner = Scanner::new(65536, watch.clone());
        for piece in stream.chunks(step) {
            scanner.feed(piece);
        }
        (1..=requests)
            .filter(|_| watch.next_request_conflicts())
            .collect()
    }

    #[test]
    fn a_head_with_both_framing_headers_is_found_after_any_bodies() {
        let stream = [
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]
        .concat();
        for step in [1, 2, 7, 64, stream.len()] {
            assert_eq!(conflicts(&stream, step, 4), vec![4], "step {step}");
        }
    }

    #[test]
    fn a_body_that_looks_like_a_conflicting_head_is_only_a_body() {
        let inner = b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = [
            format!(
                "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                inner.len()
            )
            .as_bytes(),
            inner,
            b"GET / HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(conflicts(&stream, 5, 2), Vec::<u64>::new());
    }

    #[test]
    fn http2_and_upgrades_are_left_alone() {
        assert_eq!(
            conflicts(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", 3, 1),
            Vec::<u64>::new()
        );
        let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(conflicts(upgrade, 4, 2), Vec::<u64>::new());
    }
}
