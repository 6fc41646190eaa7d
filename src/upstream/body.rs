//! The engine's request body on its way to the target: streamed, with a bound on the pauses
//! between its frames, and errors that say whose fault they are; or, for a bulk load whose
//! records were counted from it, the body already read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// How an engine's request body failed on its way to the target; the exchange is then the
/// engine's fault (400 or 408), never an upstream error.
#[derive(Debug, thiserror::Error)]
pub enum EngineBodyError {
    /// The body is not valid framing (a bad chunk size, a connection cut mid-body).
    #[error("the request body is malformed: {0}")]
    Malformed(hyper::Error),
    /// The engine stopped sending the body for longer than `server.body_read_timeout`.
    #[error("the engine sent no part of the request body for {} ms", .0.as_millis())]
    Stalled(Duration),
}

/// The engine's request body, streamed to the target with a bound on pauses between frames.
#[derive(Debug)]
pub struct EngineBody {
    inner: Source,
    idle: Duration,
    /// Created on the first pause only, then re-armed: most bodies never wait.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

/// Where the body's bytes come from.
#[derive(Debug)]
enum Source {
    /// The engine's connection.
    Streaming(Incoming),
    /// Read already (a bulk load); taken by the first frame.
    Read(Option<Bytes>),
}

impl EngineBody {
    /// Wraps a request body; a pause longer than `idle` fails it with [`EngineBodyError::Stalled`].
    pub fn new(inner: Incoming, idle: Duration) -> EngineBody {
        EngineBody {
            inner: Source::Streaming(inner),
            idle,
            timer: None,
            armed: false,
        }
    }

    /// A body read whole already (a bulk load's, whose records were counted from it).
    pub fn read(bytes: Bytes) -> EngineBody {
        EngineBody {
            inner: Source::Read(Some(bytes)),
            idle: Duration::ZERO,
            timer: None,
            armed: false,
        }
    }
}

impl Body for EngineBody {
    type Data = Bytes;
    type Error = EngineBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, EngineBodyError>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Source::Streaming(inner) => inner,
            Source::Read(bytes) => {
                return Poll::Ready(
                    bytes
                        .take()
                        .filter(|b| !b.is_empty())
                        .map(|b| Ok(Frame::data(b))),
                )
            }
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(EngineBodyError::Malformed(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    timer.as_mut().reset(deadline);
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(EngineBodyError::Stalled(this.idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Streaming(inner) => inner.is_end_stream(),
            Source::Read(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Streaming(inner) => inner.size_hint(),
            Source::Read(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
