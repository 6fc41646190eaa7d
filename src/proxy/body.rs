//! The body of a proxied response: the target's body streamed through, or a small local one
//! (a problem document).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Either the upstream's streaming body or a local answer (a problem document).
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the target as it arrives.
    Upstream(Incoming),
    /// Built by tollgate.
    Local(Full<Bytes>),
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> ProxyBody {
        ProxyBody::Local(Full::new(bytes))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Local(body) => body.size_hint(),
        }
    }
}
