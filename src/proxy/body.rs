//! The body of a proxied response: the target's body streamed through, or a small local one
//! (a problem document), or a bulk load's answer read to count its created records (whole, or
//! the part read before it proved too large, then the rest streamed).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::UpstreamBody;

/// Either the upstream's streaming body or a local answer (a problem document).
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the target as it arrives.
    Upstream(UpstreamBody),
    /// Built by tollgate, or read whole from the target.
    Local(Full<Bytes>),
    /// The part of the target's answer read already, then the rest as it arrives.
    Resumed {
        /// What was read (taken by the first frame).
        read: Option<Bytes>,
        /// The rest of the target's body.
        rest: UpstreamBody,
    },
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
            ProxyBody::Resumed { read, rest } => match read.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Local(body) => body.is_end_stream(),
            ProxyBody::Resumed { read, rest } => read.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Local(body) => body.size_hint(),
            ProxyBody::Resumed { read, rest } => {
                let read = read.as_ref().map_or(0, |bytes| bytes.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}
