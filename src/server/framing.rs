//! Refusing requests whose framing is ambiguous. hyper resolves a request carrying both
//! `Content-Length` and `Transfer-Encoding` the RFC 9112 way (chunked wins, the length is
//! dropped, the connection closes), so by the time the service sees it the conflict is gone.
//! The request path refuses such a request with 400 and never forwards it (docs/http.md), so each HTTP/1
//! connection's bytes pass through a [`ScanningIo`] whose [`Scanner`] frames the requests
//! exactly as hyper's HTTP/1 server does (heads by httparse with hyper's settings, bodies by
//! hyper's `Content-Length` rules and its chunked decoder) and notes which request head (by
//! sequence number) had both headers. Where hyper refuses the bytes (it answers 400 and
//! closes the connection) the scanner stops, as it does for HTTP/2.
//!
//! The same reads bound how long a connection may take to send its first head. hyper's
//! `header_read_timeout` only starts once hyper-util has chosen the protocol, which needs the
//! client's first bytes: a client that connects and never sends a byte would hold its
//! connection (and a file descriptor) for ever. [`ScanningIo`] fails the reads once the
//! timeout has passed since accept without a complete first head (or the HTTP/2 preface);
//! from then on hyper's own timer bounds the time between requests.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Most headers a head may have: hyper's default limit, beyond which it refuses the head.
const MAX_HEADERS: usize = 100;

/// What a connection's scanner tells the service, shared through the request extensions.
#[derive(Debug, Default)]
pub struct FramingWatch {
    /// Sequence number (1-based) of the first head with both framing headers; 0 if none.
    conflict: AtomicU64,
    /// Requests the service has taken from this connection.
    served: AtomicU64,
    /// Set once the connection's bytes are no longer HTTP/1 requests the scanner follows.
    stopped: AtomicBool,
}

impl FramingWatch {
    /// Called once per request, in order: whether this request's head had both framing headers.
    pub fn next_request_conflicts(&self) -> bool {
        let sequence = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.conflict.load(Ordering::Relaxed) == sequence
    }

    /// Stops the scan for good: bytes hyper refuses, or a tunnel (call it before the 2xx or 101).
    pub fn stop_following(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn following(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    fn record_conflict(&self, sequence: u64) {
        let _ = self
            .conflict
            .compare_exchange(0, sequence, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// At or inside a request head (the bytes of a head split across reads are kept aside).
    Head,
    /// Inside a body of known length: the bytes left.
    Body(u64),
    /// Inside a chunked body, outside chunk data.
    Chunked(Chunk),
    /// Inside chunk data: the bytes left.
    ChunkData(u64),
}

/// Where a chunked body is between chunk data, state for state as hyper's chunked decoder
/// (`ChunkedState` in hyper's `proto/h1/decode.rs`).
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// In the hex digits of a chunk size, with the size so far.
    Size(u64),
    /// In spaces or tabs after a chunk size.
    SizeLws(u64),
    /// In a chunk extension, which runs to CR and may hold any byte but LF.
    Extension(u64),
    /// Expecting the LF of a chunk-size line.
    SizeLf(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// After the last chunk's size line or a trailer line: CR ends the body, any other byte
    /// starts a trailer line.
    EndCr,
    /// Expecting the LF that ends the body.
    EndLf,
    /// In a trailer line, which runs to CR.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
}

impl Chunk {
    /// Where `byte` takes the body, as hyper's decoder moves; `None` where hyper refuses it.
    fn after(self, byte: u8) -> Option<State> {
        use Chunk::*;
        let next = match (self, byte) {
            (Start, _) => Size(hex(byte)?),
            (Size(size) | SizeLws(size), b' ' | b'\t') => SizeLws(size),
            (Size(size) | SizeLws(size), b';') => Extension(size),
            (Size(size) | SizeLws(size) | Extension(size), b'\r') => SizeLf(size),
            (Size(size), _) => Size(size.checked_mul(16)?.checked_add(hex(byte)?)?),
            (Extension(_), b'\n') => return None,
            (Extension(size), _) => Extension(size),
            (SizeLf(0), b'\n') => EndCr,
            (SizeLf(size), b'\n') => return Some(State::ChunkData(size)),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (EndLf, b'\n') => return Some(State::Head),
            (Trailer, b'\r') => TrailerLf,
            (EndCr | Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            _ => return None,
        };
        Some(State::Chunked(next))
    }
}

/// The value of a hex digit.
fn hex(byte: u8) -> Option<u64> {
    char::from(byte).to_digit(16).map(u64::from)
}

/// Follows HTTP/1 request framing over the bytes a connection reads.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The bytes so far of a head that did not arrive in one read.
    partial: Vec<u8>,
    heads: u64,
    max_head: usize,
    watch: Arc<FramingWatch>,
}

impl Scanner {
    /// A scanner for one connection; a head incomplete at `max_head` bytes (hyper's cap) stops it.
    pub fn new(max_head: usize, watch: Arc<FramingWatch>) -> Scanner {
        Scanner {
            state: State::Head,
            partial: Vec::new(),
            heads: 0,
            max_head,
            watch,
        }
    }

    /// Feeds the bytes just read.
    pub fn feed(&mut self, mut data: &[u8]) {
        if !self.watch.following() {
            return;
        }
        while !data.is_empty() {
            match self.state {
                State::Head => match self.head(data) {
                    Some(rest) => data = rest,
                    None => return,
                },
                State::Body(left) => {
                    let (rest, left) = skip(data, left);
                    data = rest;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(left) => {
                    let (rest, left) = skip(data, left);
                    data = rest;
                    self.state = if left == 0 {
                        State::Chunked(Chunk::DataCr)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::Chunked(mut chunk) => {
                    let mut used = 0;
                    self.state = loop {
                        let Some(&byte) = data.get(used) else {
                            break State::Chunked(chunk);
                        };
                        used += 1;
                        match chunk.after(byte) {
                            Some(State::Chunked(next)) => chunk = next,
                            Some(next) => break next,
                            None => return self.stop(),
                        }
                    };
                    data = &data[used..];
                }
            }
        }
    }

    /// Takes the bytes of a head: returns those after it once it is complete, or `None` when
    /// `data` is used up (the head is still incomplete, or the scan stopped).
    fn head<'d>(&mut self, data: &'d [u8]) -> Option<&'d [u8]> {
        let before = self.partial.len();
        let parsed = if before == 0 {
            // The usual case: a whole head in one read, parsed where it lies, no copy.
            parse_head(data)
        } else {
            self.partial.extend_from_slice(data);
            if may_end_head(&self.partial, before) {
                parse_head(&self.partial)
            } else {
                Parsed::Partial
            }
        };
        match parsed {
            Parsed::Complete(head) => {
                self.partial = Vec::new();
                self.heads += 1;
                if head.both {
                    self.watch.record_conflict(self.heads);
                }
                self.state = head.body;
                // The head was incomplete before these bytes, so it ends inside them.
                Some(&data[head.len.saturating_sub(before)..])
            }
            // hyper gives up on a head still incomplete when it fills the read buffer limit; a
            // read that completes a head is taken whatever its length.
            Parsed::Partial if before + data.len() < self.max_head => {
                if before == 0 {
                    self.partial.extend_from_slice(data);
                }
                None
            }
            _ => {
                self.stop();
                None
            }
        }
    }

    /// Stops for good, through the watch, as a tunnel would stop the scan.
    fn stop(&mut self) {
        self.partial = Vec::new();
        self.watch.stop_following();
    }
}

/// Skips up to `left` bytes of `data`: the bytes after them and how many are still to skip.
fn skip(data: &[u8], left: u64) -> (&[u8], u64) {
    let take = usize::try_from(left).map_or(data.len(), |left| left.min(data.len()));
    (&data[take..], left - take as u64)
}

/// What the bytes of a request head say.
enum Parsed {
    /// Not all of the head has arrived.
    Partial,
    /// hyper refuses the head (it answers 400 and closes the connection).
    Refused,
    /// A head hyper accepts.
    Complete(Head),
}

/// A complete request head, framed as hyper frames it.
struct Head {
    /// Its length in bytes, with any empty lines before it.
    len: usize,
    /// Whether it has both `Content-Length` and `Transfer-Encoding`.
    both: bool,
    /// Where its body puts the scanner.
    body: State,
}

/// Parses a request head with httparse under hyper's settings (default parser config, at most
/// 100 headers) and frames its body by hyper's rules (`Server::parse` in hyper's
/// `proto/h1/role.rs`): chunked if `Transfer-Encoding` ends in `chunked` (HTTP/1.1 only,
/// any other coding refused), else the `Content-Length`, else none. `CONNECT` and `Upgrade`
/// change nothing: hyper reads HTTP/1 requests on after them unless it answers 101 or a 2xx
/// to `CONNECT`, after which it serves none (a tunnel stops the scan first), so following on is
/// never wrong.
fn parse_head(bytes: &[u8]) -> Parsed {
    let mut headers = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        bytes,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Refused,
    };
    let http_11 = request.version == Some(1);
    let mut length = None;
    let mut has_length = false;
    let mut has_encoding = false;
    let mut chunked = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return Parsed::Refused;
            }
            // The coding wins: an earlier length is dropped, a later one not even read.
            has_encoding = true;
            length = None;
            chunked = ends_in_chunked(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            if has_encoding {
                continue;
            }
            let Some(value) = decimal(header.value) else {
                return Parsed::Refused;
            };
            if length.is_some_and(|earlier| earlier != value) {
                return Parsed::Refused;
            }
            length = Some(value);
        }
    }
    let body = match (has_encoding, length) {
        (true, _) if chunked => State::Chunked(Chunk::Start),
        (true, _) => return Parsed::Refused,
        (false, None | Some(0)) => State::Head,
        (false, Some(length)) => State::Body(length),
    };
    Parsed::Complete(Head {
        len,
        both: has_encoding && has_length,
        body,
    })
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked` (visible ASCII only, as
/// hyper reads it).
fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: decimal digits only, no sign, no list, no overflow.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |sum, &b| {
        let digit = char::from(b).to_digit(10)?;
        sum.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether the bytes from `before` on (less 3, for an end split across reads) may end a
/// head, as hyper checks before parsing a partial head again (`is_complete_fast`).
fn may_end_head(bytes: &[u8], before: usize) -> bool {
    let bytes = &bytes[before.saturating_sub(3).min(bytes.len())..];
    bytes.iter().enumerate().any(|(i, &b)| {
        let after = &bytes[i + 1..];
        match b {
            b'\r' => after.starts_with(b"\n\r\n"),
            b'\n' => after.starts_with(b"\n") || after.starts_with(b"\r\n"),
            _ => false,
        }
    })
}

/// A connection's I/O with a [`Scanner`] watching what is read.
pub struct ScanningIo<S> {
    inner: S,
    scanner: Scanner,
    /// Running until the scanner has seen the first head (or stopped following, as after the
    /// HTTP/2 preface); `None` afterwards.
    first_head: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl<S> ScanningIo<S> {
    /// Wraps a connection; its first request head must be complete within `first_head` of now.
    pub fn new(inner: S, scanner: Scanner, first_head: Duration) -> ScanningIo<S> {
        ScanningIo {
            inner,
            scanner,
            first_head: Some(Box::pin(tokio::time::sleep(first_head))),
            timeout: first_head,
        }
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
        match result {
            Poll::Ready(Ok(())) => {
                this.scanner.feed(&buf.filled()[before..]);
                if this.scanner.heads > 0 || !this.scanner.watch.following() {
                    this.first_head = None;
                }
            }
            Poll::Pending => {
                if let Some(deadline) = this.first_head.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no complete request head within {} ms of connecting",
                                this.timeout.as_millis()
                            ),
                        )));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
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
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// hyper's smallest HTTP/1 read buffer, which is also the scanner's head limit here.
    const LIMIT: usize = 8192;

    /// `stream` cut into pieces of the given sizes, taken in turn.
    fn pieces<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut rest = stream;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at((*size).min(rest.len()));
            pieces.push(piece);
            rest = after;
        }
        pieces
    }

    /// Serves `pieces` with hyper over a scanned in-memory connection, as the listeners
    /// do; returns what `next_request_conflicts` said for each request the service got.
    fn serve(pieces: &[&[u8]]) -> Vec<bool> {
        // tollgate answers CONNECT with 404.
        serve_answering_connect(pieces, StatusCode::NOT_FOUND)
    }

    /// [`serve`], answering `CONNECT` with `connect` (and anything else with 200).
    fn serve_answering_connect(pieces: &[&[u8]], connect: StatusCode) -> Vec<bool> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        runtime.block_on(async move {
            let (client, server) = tokio::io::duplex(16 * 1024);
            let watch = Arc::new(FramingWatch::default());
            let scanner = Scanner::new(LIMIT, watch.clone());
            let io = TokioIo::new(ScanningIo::new(server, scanner, Duration::from_secs(3600)));
            let service = service_fn(move |req: Request<Incoming>| {
                let conflicts = watch.next_request_conflicts();
                recorded.lock().expect("lock").push(conflicts);
                async move {
                    let status = if req.method() == Method::CONNECT {
                        connect
                    } else {
                        StatusCode::OK
                    };
                    let _ = req.into_body().collect().await;
                    let mut response = Response::new(Empty::<Bytes>::new());
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().max_buf_size(LIMIT);
            let (mut reader, mut writer) = tokio::io::split(client);
            let write = async move {
                for piece in pieces {
                    if writer.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = writer.shutdown().await;
            };
            let read = async move {
                let mut responses = Vec::new();
                let _ = reader.read_to_end(&mut responses).await;
            };
            let conversation = async {
                let connection = builder.serve_connection(io, service);
                let _ = tokio::join!(connection, write, read);
            };
            tokio::time::timeout(Duration::from_secs(10), conversation)
                .await
                .expect("hyper finishes the connection");
        });
        let seen = seen.lock().expect("lock").clone();
        seen
    }

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

    const CONFLICTING: &[u8] =
        b"POST /z HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    /// `stream` (`requests` requests) followed by a conflicting request, fed to the scanner in
    /// every piece size up to 9 and whole, and served by hyper in pieces of 1, 7 and whole.
    fn assert_followed_past(stream: &[u8], requests: u64) {
        let stream = [stream, CONFLICTING].concat();
        let shown = String::from_utf8_lossy(&stream);
        for step in (1..10).chain([stream.len()]) {
            assert_eq!(
                conflicts(&stream, step, requests + 1),
                vec![requests + 1],
                "step {step}: {shown}"
            );
        }
        let mut served = vec![false; requests as usize];
        served.push(true);
        for step in [1, 7, stream.len()] {
            assert_eq!(
                serve(&pieces(&stream, &[step])),
                served,
                "hyper, step {step}: {shown}"
            );
        }
    }

    #[test]
    fn http2_is_left_alone() {
        let preface = [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"[..],
            CONFLICTING,
        ]
        .concat();
        assert_eq!(conflicts(&preface, 3, 2), Vec::<u64>::new());
    }

    #[test]
    fn requests_after_an_upgrade_request_are_still_followed() {
        assert_followed_past(
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            1,
        );
        assert_followed_past(
            b"POST / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
            1,
        );
    }

    #[test]
    fn requests_after_a_connect_request_are_still_followed() {
        assert_followed_past(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            1,
        );
        assert_followed_past(
            b"CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ",
            1,
        );
        assert_followed_past(
            b"CONNECT example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            1,
        );
    }

    #[test]
    fn hyper_serves_nothing_after_a_2xx_to_connect_or_a_101() {
        let stream = [
            &b"CONNECT example.com:443 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            CONFLICTING,
        ]
        .concat();
        assert_eq!(serve(&[&stream]), vec![false, false, true]);
        // So following on after such an answer never misleads the service.
        let tunnel = serve_answering_connect(&[&stream], StatusCode::OK);
        assert_eq!(tunnel, vec![false]);
        let switch = serve_answering_connect(&[&stream], StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(switch, vec![false]);
    }

    #[test]
    fn heads_with_bare_lf_line_ends_are_followed() {
        assert_followed_past(b"GET /a HTTP/1.1\nHost: x\n\n", 1);
        assert_followed_past(b"POST /a HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\nhi", 1);
        assert_followed_past(b"\n\r\nGET /a HTTP/1.1\n\r\n", 1);
    }

    #[test]
    fn chunk_lines_hyper_accepts_are_followed() {
        let chunked = |body: &[u8]| {
            [
                &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                body,
            ]
            .concat()
        };
        // Extensions may hold any byte but LF, and up to 16 KiB of them per body.
        assert_followed_past(&chunked(b"3;\xff\xfe\r\nabc\r\n0\r\n\r\n"), 1);
        let long = [&b"1;"[..], &[b'x'; 6000], b"\r\na\r\n0\r\n\r\n"].concat();
        assert_followed_past(&chunked(&long), 1);
        assert_followed_past(&chunked(b"00A \t;a=\"b\"\r\n0123456789\r\n0\r\n\r\n"), 1);
        // A trailer line may hold a bare LF; the trailers end at CRLF CRLF.
        assert_followed_past(&chunked(b"0\r\nX-Check: 1\n\r\n\r\n"), 1);
        let trailer = [&b"0\r\nX-Long: "[..], &[b'y'; 9000], b"\r\n\r\n"].concat();
        assert_followed_past(&chunked(&trailer), 1);
    }

    /// Whether a conflicting request after a head of `len` bytes, fed in pieces of `step`
    /// bytes to a scanner whose head limit is 8192, is found.
    fn found_after_a_head_of(len: usize, step: usize) -> bool {
        let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        let stream = [&head[..], CONFLICTING].concat();
        let watch = Arc::new(FramingWatch::default());
        let mut scanner = Scanner::new(8192, watch.clone());
        stream.chunks(step).for_each(|piece| scanner.feed(piece));
        assert!(!watch.next_request_conflicts());
        watch.next_request_conflicts()
    }

    #[test]
    fn a_head_still_incomplete_at_the_limit_stops_the_scan() {
        for step in [1, 100, 8191, 8192, 9000] {
            assert!(found_after_a_head_of(8192, step), "step {step}");
        }
        for step in [1, 8192] {
            assert!(!found_after_a_head_of(8193, step), "step {step}");
        }
        // hyper takes a head that a read completes, past the limit or not (its reads may
        // go past the limit), so the scanner does too.
        for step in [100, 9000] {
            assert!(found_after_a_head_of(8193, step), "step {step}");
        }
    }

    #[test]
    fn garbage_stops_the_scan() {
        let stream = [
            &b"GET / HTTP/1.1\r\n\r\n\x01\x02 nonsense\r\n\r\n"[..],
            CONFLICTING,
        ]
        .concat();
        assert_eq!(conflicts(&stream, 4, 3), Vec::<u64>::new());
    }

    #[test]
    fn a_stopped_scan_ignores_what_follows() {
        let watch = Arc::new(FramingWatch::default());
        let mut scanner = Scanner::new(65536, watch.clone());
        scanner.feed(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
        watch.stop_following();
        scanner.feed(CONFLICTING);
        assert!(!watch.next_request_conflicts());
        assert!(!watch.next_request_conflicts());
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;

        use super::*;

        /// A generated request and what hyper makes of it.
        #[derive(Clone)]
        struct Generated {
            bytes: Vec<u8>,
            /// Whether its head has both `Content-Length` and `Transfer-Encoding`.
            both: bool,
            fate: Fate,
        }

        /// What hyper does with a generated request.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Fate {
            /// Hands it to the service and reads the next request.
            ReadOn,
            /// Hands it to the service, then closes the connection.
            Last,
            /// Refuses it.
            Refused,
            /// Depends on how hyper's reads fall: a head past the limit.
            Unsure,
        }

        impl std::fmt::Debug for Generated {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "{:?} both={} {:?}",
                    String::from_utf8_lossy(&self.bytes),
                    self.both,
                    self.fate
                )
            }
        }

        /// A chunked body: the coding named, chunks (data, extension, upper-case hex, leading
        /// zeros), the last chunk's extension and the trailer lines.
        #[derive(Debug, Clone)]
        struct Chunked {
            coding: &'static str,
            chunks: Vec<(Vec<u8>, &'static str, bool, usize)>,
            last: &'static str,
            trailers: Vec<&'static str>,
        }

        impl Chunked {
            fn render(&self, out: &mut Vec<u8>) {
                for (data, extension, upper, zeros) in &self.chunks {
                    let size = format!("{}{:x}", "0".repeat(*zeros), data.len());
                    let size = if *upper { size.to_uppercase() } else { size };
                    out.extend_from_slice(size.as_bytes());
                    out.extend_from_slice(extension.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0");
                out.extend_from_slice(self.last.as_bytes());
                out.extend_from_slice(b"\r\n");
                for trailer in &self.trailers {
                    out.extend_from_slice(trailer.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }

        /// How a generated request frames its body.
        #[derive(Debug, Clone)]
        enum Framing {
            None,
            /// A body with `Content-Length`, the header sent once or twice.
            Length(Vec<u8>, bool),
            Chunked(Chunked),
            /// Both headers (the length first or second, with its value); the body is chunked.
            Both(Chunked, bool, &'static str),
        }

        fn chunked() -> impl Strategy<Value = Chunked> {
            let extension = select(vec![
                "",
                ";a",
                ";a=b",
                " ;x",
                "\t ;q=\"v w\"",
                "  ",
                ";\u{e9}t\u{e9}",
            ]);
            (
                select(vec!["chunked", "Chunked", "gzip, chunked", "gzip,chunked"]),
                vec(
                    (
                        vec(any::<u8>(), 1..40),
                        extension.clone(),
                        any::<bool>(),
                        0usize..3,
                    ),
                    0..4,
                ),
                extension,
                vec(select(vec!["X-T: 1", "X-Sum: abc", "Expires: 0"]), 0..3),
            )
                .prop_map(|(coding, chunks, last, trailers)| Chunked {
                    coding,
                    chunks,
                    last,
                    trailers,
                })
        }

        fn framing() -> impl Strategy<Value = Framing> {
            prop_oneof![
                2 => Just(Framing::None),
                2 => (vec(any::<u8>(), 0..40), any::<bool>())
                    .prop_map(|(body, twice)| Framing::Length(body, twice)),
                2 => chunked().prop_map(Framing::Chunked),
                // hyper parses a length before the coding (it must be valid), not one after.
                1 => (chunked(), select(vec!["0", "7", "12"]))
                    .prop_map(|(body, length)| Framing::Both(body, true, length)),
                1 => (chunked(), select(vec!["0", "7", "abc", "1, 2"]))
                    .prop_map(|(body, length)| Framing::Both(body, false, length)),
            ]
        }

        /// Line ends: 0 all CRLF, 1 all bare LF, 2 mixed by the bits of the mask.
        fn ending(mode: u8, mask: u32, line: usize) -> &'static [u8] {
            let bare = match mode {
                0 => false,
                1 => true,
                _ => mask >> (line % 32) & 1 == 1,
            };
            if bare {
                b"\n"
            } else {
                b"\r\n"
            }
        }

        prop_compose! {
            fn well_formed()(
                leading in vec(any::<bool>(), 0..3),
                method in select(
                    vec!["GET", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PURGE"],
                ),
                upgrade in select(vec![None, Some("websocket"), Some("h2c")]),
                expect in any::<bool>(),
                pad in prop_oneof![9 => 0usize..40, 1 => LIMIT - 100..LIMIT + 40],
                mode in 0u8..3,
                mask in any::<u32>(),
                framing in framing(),
            ) -> Generated {
                let target = if method == "CONNECT" { "example.com:443" } else { "/p" };
                let mut lines = vec![format!("{method} {target} HTTP/1.1").into_bytes()];
                lines.push(b"Host: example.com".to_vec());
                if let Some(protocol) = upgrade {
                    lines.push(b"Connection: upgrade".to_vec());
                    lines.push(format!("Upgrade: {protocol}").into_bytes());
                }
                if expect {
                    lines.push(b"Expect: 100-continue".to_vec());
                }
                let mut body = Vec::new();
                let mut both = false;
                match &framing {
                    Framing::None => {}
                    Framing::Length(data, twice) => {
                        for _ in 0..1 + usize::from(*twice) {
                            lines.push(format!("Content-Length: {}", data.len()).into_bytes());
                        }
                        body.extend_from_slice(data);
                    }
                    Framing::Chunked(chunked) => {
                        lines.push(format!("Transfer-Encoding: {}", chunked.coding).into_bytes());
                        chunked.render(&mut body);
                    }
                    Framing::Both(chunked, length_first, length) => {
                        let length = format!("Content-Length: {length}").into_bytes();
                        let coding = format!("Transfer-Encoding: {}", chunked.coding).into_bytes();
                        if *length_first {
                            lines.extend([length, coding]);
                        } else {
                            lines.extend([coding, length]);
                        }
                        chunked.render(&mut body);
                        both = true;
                    }
                }
                let mut bytes = Vec::new();
                for bare in leading {
                    bytes.extend_from_slice(if bare { b"\n" } else { b"\r\n" });
                }
                let mut pad_line = b"X-Pad: ".to_vec();
                pad_line.resize(7 + pad, b'p');
                lines.push(pad_line);
                for (i, line) in lines.iter().enumerate() {
                    bytes.extend_from_slice(line);
                    bytes.extend_from_slice(ending(mode, mask, i));
                }
                bytes.extend_from_slice(ending(mode, mask, lines.len()));
                let fate = if bytes.len() > LIMIT {
                    Fate::Unsure
                } else if both {
                    // hyper closes the connection after a request with both headers.
                    Fate::Last
                } else {
                    Fate::ReadOn
                };
                bytes.extend_from_slice(&body);
                Generated { bytes, both, fate }
            }
        }

        /// Requests hyper refuses, whole or from the body on.
        fn refused() -> impl Strategy<Value = Generated> {
            let refused = |bytes: &[u8], fate| Generated {
                bytes: bytes.to_vec(),
                both: false,
                fate,
            };
            select(vec![
                refused(b"\x01garbage\r\n\r\n", Fate::Refused),
                refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Fate::Refused),
                refused(
                    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    Fate::Refused,
                ),
                refused(
                    b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
                    Fate::Refused,
                ),
                refused(
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                    Fate::Refused,
                ),
                refused(
                    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                    Fate::Refused,
                ),
                refused(
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
                    Fate::Last,
                ),
                refused(
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
                    Fate::Last,
                ),
            ])
        }

        fn requests() -> impl Strategy<Value = Vec<Generated>> {
            vec(prop_oneof![12 => well_formed(), 1 => refused()], 1..7)
        }

        /// What the service should see first, in order: per request, whether it conflicts;
        /// and whether it sees nothing more (false when a request's fate is unsure).
        fn expected(requests: &[Generated]) -> (Vec<bool>, bool) {
            let mut seen = Vec::new();
            for request in requests {
                match request.fate {
                    Fate::Refused => return (seen, true),
                    Fate::Unsure => return (seen, false),
                    Fate::ReadOn => seen.push(request.both),
                    Fate::Last => {
                        seen.push(request.both);
                        return (seen, true);
                    }
                }
            }
            (seen, true)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

            #[test]
            fn hyper_and_the_scanner_agree_on_which_request_conflicts(
                requests in requests(),
                sizes in vec(1usize..300, 1..8),
            ) {
                let stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
                let seen = serve(&pieces(&stream, &sizes));
                // Every request hyper hands over is reported exactly as its head was.
                prop_assert!(seen.len() <= requests.len());
                for (i, conflicts) in seen.iter().enumerate() {
                    prop_assert_eq!(*conflicts, requests[i].both, "request {}", i + 1);
                }
                // And hyper hands over the requests the generator expects, so none goes unchecked.
                let (expected, exact) = expected(&requests);
                prop_assert!(seen.starts_with(&expected), "{:?} then {:?}", expected, seen);
                if exact {
                    prop_assert_eq!(seen.len(), expected.len());
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn the_scanner_alone_finds_the_conflict_in_any_pieces(
                requests in requests(),
                sizes in vec(1usize..300, 1..8),
            ) {
                let stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
                let watch = Arc::new(FramingWatch::default());
                let mut scanner = Scanner::new(LIMIT, watch.clone());
                for piece in pieces(&stream, &sizes) {
                    scanner.feed(piece);
                }
                let (expected, _) = expected(&requests);
                let seen: Vec<bool> =
                    expected.iter().map(|_| watch.next_request_conflicts()).collect();
                prop_assert_eq!(seen, expected);
            }

            #[test]
            fn arbitrary_bytes_in_arbitrary_pieces_never_panic(
                stream in vec(any::<u8>(), 0..4096),
                sizes in vec(1usize..600, 1..8),
                max_head in 0usize..600,
            ) {
                let watch = Arc::new(FramingWatch::default());
                let mut scanner = Scanner::new(max_head, watch.clone());
                for piece in pieces(&stream, &sizes) {
                    scanner.feed(piece);
                }
                let _ = watch.next_request_conflicts();
            }

            #[test]
            fn mangled_requests_never_panic(
                requests in requests(),
                flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                sizes in vec(1usize..300, 1..8),
            ) {
                let mut stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
                for (at, byte) in flips {
                    let at = at.index(stream.len());
                    stream[at] = byte;
                }
                let watch = Arc::new(FramingWatch::default());
                let mut scanner = Scanner::new(LIMIT, watch.clone());
                for piece in pieces(&stream, &sizes) {
                    scanner.feed(piece);
                }
            }
        }
    }
}

#[cfg(test)]
mod first_head {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn scanning(server: DuplexStream) -> ScanningIo<DuplexStream> {
        let scanner = Scanner::new(65536, Arc::new(FramingWatch::default()));
        ScanningIo::new(server, scanner, Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_its_read_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = scanning(server);
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_in_pieces_ends_the_deadline() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut io = scanning(server);
        let mut buf = [0u8; 64];
        for piece in [&b"GET / HTTP/1.1\r\nHost: x\r"[..], b"\n\r", b"\n"] {
            client.write_all(piece).await.unwrap();
            assert!(io.read(&mut buf).await.unwrap() > 0);
        }
        assert!(io.first_head.is_none());
        // Idle afterwards: no deadline of its own any more (hyper's timer takes over).
        let idle = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(idle.is_err(), "the read is still pending, not failed");
    }

    #[tokio::test(start_paused = true)]
    async fn bare_line_feeds_and_the_http2_preface_end_it_too() {
        for stream in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (mut client, server) = tokio::io::duplex(256);
            let mut io = scanning(server);
            client.write_all(stream).await.unwrap();
            let mut buf = [0u8; 64];
            assert!(io.read(&mut buf).await.unwrap() > 0);
            assert!(
                io.first_head.is_none(),
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_ends_is_cut_off() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut io = scanning(server);
        client.write_all(b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
