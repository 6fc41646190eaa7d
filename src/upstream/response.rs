//! The target's answer body on its way to the engine. Over HTTP/1.1 it also drives the
//! connection it arrives on (the connection has no task of its own), and once the body has
//! arrived whole the connection goes back to its pool for the next request; an answer left
//! unfinished (the engine hung up) closes its connection instead.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::pool::{Conn, Pool};

/// The body of a target's answer.
pub struct UpstreamBody {
    inner: Incoming,
    /// HTTP/1.1: the connection the body arrives on, and where it goes back to.
    driven: Option<(Box<Conn>, Arc<Pool>)>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("driven", &self.driven.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// A body over a connection this body drives and gives back to `pool` at its end.
    pub(super) fn driven(inner: Incoming, conn: Box<Conn>, pool: Arc<Pool>) -> UpstreamBody {
        UpstreamBody {
            inner,
            driven: Some((conn, pool)),
        }
    }

    /// A body whose connection runs by itself (HTTP/2).
    pub(super) fn shared(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            driven: None,
        }
    }

    /// The body has arrived whole: its connection can serve the next request.
    fn give_back(&mut self) {
        if let Some((conn, pool)) = self.driven.take() {
            pool.checkin(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some((conn, _)) = &mut this.driven {
            // Reads the next bytes of the body (or notices the connection end).
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing left to read (an empty answer the server never polled) leaves
        // its connection reusable; an unfinished one takes its connection with it.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
