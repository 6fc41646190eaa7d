//! The deadline for a connection's first request head. hyper's `header_read_timeout` starts
//! only once hyper-util has chosen the protocol, which needs the client's first bytes: a
//! client that connects and never sends a byte would hold its connection (and a file
//! descriptor) for ever. [`FirstHead`] fails the connection's reads once `header_read_timeout`
//! has passed since accept without a complete first head (or HTTP/2 preface); from then on
//! hyper's own timer bounds the time between requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection's I/O, bounded in the time its first request head may take to arrive.
pub struct FirstHead<S> {
    inner: S,
    /// Running until the first head is complete; `None` afterwards.
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    /// The last bytes read, to find a head's end (`\n\r\n` or `\n\n`) across reads.
    tail: [u8; 2],
}

impl<S> FirstHead<S> {
    /// Starts the deadline now (at accept).
    pub fn new(inner: S, timeout: Duration) -> FirstHead<S> {
        FirstHead {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            tail: [0; 2],
        }
    }
}

/// Notes bytes read after `tail` (the two bytes before them); returns whether a blank line
/// (the end of a head, or of the HTTP/2 preface's first part) has been seen.
fn saw_head_end(tail: &mut [u8; 2], data: &[u8]) -> bool {
    let mut window = [0, tail[0], tail[1]];
    for &byte in data {
        window = [window[1], window[2], byte];
        if byte == b'\n' && (window[1] == b'\n' || window[..2] == *b"\n\r") {
            return true;
        }
    }
    *tail = [window[1], window[2]];
    false
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstHead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return result;
        };
        match result {
            Poll::Ready(Ok(())) => {
                if saw_head_end(&mut this.tail, &buf.filled()[before..]) {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no complete request head within {} ms of connecting",
                        this.timeout.as_millis()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstHead<S> {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_its_read_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = FirstHead::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_in_pieces_ends_the_deadline() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut io = FirstHead::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 64];
        for piece in [&b"GET / HTTP/1.1\r\nHost: x\r"[..], b"\n\r", b"\n"] {
            client.write_all(piece).await.unwrap();
            assert!(io.read(&mut buf).await.unwrap() > 0);
        }
        assert!(io.deadline.is_none());
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
            let mut io = FirstHead::new(server, Duration::from_secs(10));
            client.write_all(stream).await.unwrap();
            let mut buf = [0u8; 64];
            assert!(io.read(&mut buf).await.unwrap() > 0);
            assert!(
                io.deadline.is_none(),
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_ends_is_cut_off() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut io = FirstHead::new(server, Duration::from_secs(10));
        client.write_all(b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
