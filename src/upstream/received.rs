//! What an upstream sends back, whichever client received it: the response body
//! ([`ReceivedBody`]) and, after `101 Switching Protocols`, the connection itself
//! ([`UpstreamUpgrade`]). `protocol: http1` upstreams use the gateway's own client
//! ([`super::http1`]); `http2` and `auto` use hyper's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::http1::{PooledBody, Upgraded};
use crate::body::BoxError;
use crate::io::TunnelIo;

/// A response body from an upstream.
pub enum ReceivedBody {
    Pooled(PooledBody),
    Hyper(Incoming),
}

impl Body for ReceivedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReceivedBody::Pooled(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ReceivedBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReceivedBody::Pooled(body) => body.is_end_stream(),
            ReceivedBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReceivedBody::Pooled(body) => body.size_hint(),
            ReceivedBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// The upstream side of a protocol switch, once the upstream has answered `101`.
pub enum UpstreamUpgrade {
    Hyper(OnUpgrade),
    Pooled(Option<Upgraded>),
}

impl UpstreamUpgrade {
    /// Takes the connection out of a `101` response.
    pub fn of(response: &mut Response<ReceivedBody>) -> Self {
        if matches!(response.body(), ReceivedBody::Hyper(_)) {
            return UpstreamUpgrade::Hyper(hyper::upgrade::on(response));
        }
        match response.body_mut() {
            ReceivedBody::Pooled(body) => UpstreamUpgrade::Pooled(body.take_upgraded()),
            ReceivedBody::Hyper(_) => UpstreamUpgrade::Pooled(None),
        }
    }

    /// The connection, ready to carry bytes.
    pub async fn connected(self) -> Result<Box<dyn TunnelIo>, BoxError> {
        match self {
            UpstreamUpgrade::Hyper(upgrade) => Ok(Box::new(TokioIo::new(upgrade.await?))),
            UpstreamUpgrade::Pooled(Some(upgraded)) => Ok(Box::new(upgraded)),
            UpstreamUpgrade::Pooled(None) => {
                Err("the upstream's connection closed before the switch".into())
            }
        }
    }
}
