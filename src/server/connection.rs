//! Serving one accepted connection: choosing HTTP/1.1 or HTTP/2 for it (from its first
//! bytes, or from ALPN on TLS), serving HTTP/1.1 with the gateway's own server
//! ([`super::http1`]) and HTTP/2 with hyper's (per-listener builders), and finishing its
//! requests when the gateway drains.
//!
//! The caller reads until the first bytes tell ([`Protocol::sniff`]): every HTTP/1.1
//! connection meets the gateway's own parser, never hyper's HTTP/1.1 one.
//!
//! Two guards apply to the connections hyper serves (HTTP/2, in practice):
//!
//! - **Cancelled streams** (paced rapid reset): a request whose answer the client
//!   cancels (RST_STREAM) before its response head is counted; once a connection has
//!   more than [`CANCELLED_STREAMS_ALLOWED`] such requests and they are more than half of
//!   its requests, it is closed: GOAWAY, then at most `idle_timeout` for the streams
//!   still open. h2's own limit counts only streams reset before hyper accepted them.
//! - **Responses that make no progress**: hyper stops polling a response body while its
//!   stream has no flow-control window, so a client that grants none would keep the
//!   body, and the upstream permit it holds, for ever. Each stream's task is watched
//!   ([`StreamExecutor`]): once a body frame has waited `idle_timeout` for the client to
//!   take it, the task is dropped, which resets the stream (CANCEL) and releases the
//!   body; counted as `portcullis_client_timeouts_total{phase="response"}`.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::{ConnectionContext, ListenerContext};
use crate::body::{ClientBody, Http2Body};
use crate::io::Rewound;
use crate::proxy::ResponseBody;
use crate::shutdown::{signalled, Shutdown};

/// What a client's connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// Not known yet: let hyper-util read the first bytes and decide.
    Undecided,
}

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113, 3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Protocol {
    /// Decides from the first bytes a cleartext client sent (at least one).
    pub fn sniff(first: &[u8]) -> Protocol {
        if first.len() >= H2_PREFACE.len() {
            if first.starts_with(H2_PREFACE) {
                Protocol::Http2
            } else {
                Protocol::Http1
            }
        } else if H2_PREFACE.starts_with(first) {
            Protocol::Undecided
        } else {
            Protocol::Http1
        }
    }

    /// Decides from what ALPN negotiated on a TLS connection.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Protocol {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") => Protocol::Http1,
            _ => Protocol::Undecided,
        }
    }
}

/// One listener's hyper settings, built once per listener.
pub struct HttpBuilders {
    http2: http2::Builder<StreamExecutor>,
}

impl HttpBuilders {
    pub fn new(context: &ListenerContext) -> Self {
        let limits = &context.limits;
        let max_header_list = u32::try_from(limits.max_header_size).unwrap_or(u32::MAX);
        let executor = StreamExecutor {
            idle_timeout: limits.idle_timeout,
            stalled: context.timeouts.response.clone(),
        };
        let mut http2 = http2::Builder::new(executor);
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(max_header_list)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(limits.idle_timeout));
        HttpBuilders { http2 }
    }
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<WatchedBody>, Infallible>> + Send>>;

/// Cancelled requests a connection may have before their share of its requests counts.
pub const CANCELLED_STREAMS_ALLOWED: u64 = 100;

/// What the requests of one connection served by hyper share.
struct Served {
    context: ConnectionContext,
    /// Requests started.
    started: AtomicU64,
    /// Requests whose answer was dropped before it was ready (the client cancelled).
    cancelled: AtomicU64,
    /// Set once, when the cancelled requests cross the limit.
    flooded: AtomicBool,
    /// Wakes the connection's task to close the connection.
    close: Notify,
}

impl Served {
    /// Counts a cancelled request; the first time the connection's cancellations are
    /// over the limit, asks its task to close it.
    fn cancelled(&self) {
        let cancelled = self.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if cancelled > CANCELLED_STREAMS_ALLOWED
            && cancelled.saturating_mul(2) > self.started.load(Ordering::Relaxed)
            && !self.flooded.swap(true, Ordering::Relaxed)
        {
            self.close.notify_one();
        }
    }
}

/// Counts its request as cancelled unless [`Answering::answered`] is called first.
struct Answering<'a> {
    served: &'a Served,
    answered: bool,
}

impl Answering<'_> {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.served.cancelled();
        }
    }
}

/// Serves `stream` until the client closes it or the gateway drains it. hyper's
/// connections are boxed: their states are large, and the task of an HTTP/1.1
/// connection (the common case) should stay small while it idles.
///
/// `first`: bytes already read from the stream (they are served first); `tls`: the
/// stream is TLS, whose close must be announced.
pub async fn serve_connection<S>(
    builders: &HttpBuilders,
    protocol: Protocol,
    stream: S,
    first: BytesMut,
    tls: bool,
    context: ConnectionContext,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            return super::http1::serve(stream, first, tls, &context, shutdown).await;
        }
        Protocol::Http2 => {}
        // The caller reads until the first bytes decide; a connection that ended before
        // they did has nothing to serve.
        Protocol::Undecided => return,
    }
    let served = Arc::new(Served {
        context,
        started: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
        flooded: AtomicBool::new(false),
        close: Notify::new(),
    });
    let service_served = served.clone();
    // hyper keeps one slot for the service's future for the connection's whole life,
    // sized to that future: boxing it per request keeps idle connections small.
    let service = service_fn(move |request| {
        let served = service_served.clone();
        let declared = crate::http1::fields::content_length(request.headers())
            .ok()
            .flatten();
        let request =
            request.map(|body| ClientBody::Hyper(Box::new(Http2Body::new(body, declared))));
        let response: ServiceFuture = Box::pin(async move {
            served.started.fetch_add(1, Ordering::Relaxed);
            let answering = Answering {
                served: &served,
                answered: false,
            };
            let response = served.context.handle(request).await;
            answering.answered();
            Ok::<_, Infallible>(response.map(|inner| WatchedBody { inner }))
        });
        response
    });
    let io = TokioIo::new(Rewound::new(stream, first));
    let flooded = async {
        served.close.notified().await;
        let listener = &served.context.listener;
        listener.cancel_floods.inc();
        tracing::warn!(
            listener = %listener.name,
            client = ?served.context.peer_ip,
            cancelled = served.cancelled.load(Ordering::Relaxed),
            requests = served.started.load(Ordering::Relaxed),
            "closing an HTTP/2 connection whose client cancels most of its requests"
        );
    };
    let grace = served.context.listener.limits.idle_timeout;
    let connection = Box::pin(builders.http2.serve_connection(io, service));
    let result = Box::pin(until_drained(connection, shutdown, flooded, grace)).await;
    if let Err(error) = result {
        tracing::debug!("connection ended with an error: {error}");
    }
}

/// A hyper connection that can be asked to finish its requests and close.
trait GracefulConnection: Future {
    fn shut_down_gracefully(self: Pin<&mut Self>);
}

impl<C: GracefulConnection + ?Sized> GracefulConnection for Pin<Box<C>> {
    fn shut_down_gracefully(self: Pin<&mut Self>) {
        self.get_mut().as_mut().shut_down_gracefully();
    }
}

impl<I, S, B> GracefulConnection for http2::Connection<I, S, StreamExecutor>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut_down_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `connection` to its end; once draining starts, asks it to finish its requests
/// and close, and drops it when the gateway closes what is left. When `abusive`
/// resolves (the client misbehaves), does the same but gives it only `grace`.
async fn until_drained<C, E>(
    connection: C,
    mut shutdown: Shutdown,
    abusive: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), E>
where
    C: GracefulConnection<Output = Result<(), E>>,
{
    tokio::pin!(connection);
    // Biased: the connection first, every time the task wakes (it is what woke it).
    let grace = tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        _ = signalled(&mut shutdown.drain) => None,
        () = abusive => Some(grace),
    };
    connection.as_mut().shut_down_gracefully();
    let grace = async {
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = connection.as_mut() => result,
        _ = signalled(&mut shutdown.close) => Ok(()),
        () = grace => Ok(()),
    }
}

tokio::task_local! {
    /// What the response body of the HTTP/2 stream whose task is running did last.
    static RESPONSE_BODY: Cell<BodyProgress>;
}

/// What a response body did since its stream's task last looked.
#[derive(Debug, Clone, Copy, Default)]
struct BodyProgress {
    /// hyper polled it.
    polled: bool,
    /// Its last poll gave hyper a frame, which hyper holds until the client grants
    /// window: no poll follows until then.
    waiting: bool,
}

/// hyper's executor for HTTP/2 streams: spawns each on the current runtime, watched
/// for a response body that waits on its client for `idle_timeout` ([`watch_stream`]).
#[derive(Clone)]
pub struct StreamExecutor {
    idle_timeout: Duration,
    /// Counts the streams reset for making no progress.
    stalled: IntCounter,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(watch_stream(
            future,
            self.idle_timeout,
            self.stalled.clone(),
        ));
    }
}

/// Runs `stream` (hyper's task for one HTTP/2 stream); ends it (dropping it resets the
/// stream and releases the response body) once its body has had a frame waiting for
/// the client's window for `idle_timeout`. Other futures never report a body and run
/// unwatched.
async fn watch_stream<F: Future>(
    stream: F,
    idle_timeout: Duration,
    stalled: IntCounter,
) -> Option<F::Output> {
    let mut stream = pin!(stream);
    // Created (on the heap) the first time a frame waits: most responses never need it,
    // and every stream's task would otherwise carry a timer's room.
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    let mut waiting = false;
    let output = std::future::poll_fn(|cx| {
        let before = Cell::new(BodyProgress {
            polled: false,
            waiting,
        });
        let (polled, progress) = RESPONSE_BODY.sync_scope(before, || {
            let polled = stream.as_mut().poll(cx);
            (polled, RESPONSE_BODY.with(Cell::get))
        });
        if let Poll::Ready(output) = polled {
            return Poll::Ready(Some(output));
        }
        waiting = progress.waiting;
        if !waiting {
            // An armed deadline may still fire: one spurious wake-up, then nothing.
            return Poll::Pending;
        }
        let until = tokio::time::Instant::now() + idle_timeout;
        let sleep = match &mut deadline {
            Some(sleep) => {
                if progress.polled {
                    sleep.as_mut().reset(until);
                }
                sleep
            }
            None => deadline.insert(Box::pin(tokio::time::sleep_until(until))),
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if output.is_none() {
        stalled.inc();
        tracing::debug!(
            "reset an HTTP/2 stream whose client took none of its response for {idle_timeout:?}"
        );
    }
    output
}

/// A response body that tells its stream's watcher ([`watch_stream`]) when hyper holds
/// one of its frames. Outside a watched task (HTTP/1.1) it only passes frames on.
pub struct WatchedBody {
    inner: ResponseBody,
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.get_mut().inner).poll_frame(cx);
        let waiting = matches!(polled, Poll::Ready(Some(Ok(_))));
        let _ = RESPONSE_BODY.try_with(|progress| {
            progress.set(BodyProgress {
                polled: true,
                waiting,
            });
        });
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_http1_from_the_http2_preface() {
        assert_eq!(Protocol::sniff(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(
            Protocol::sniff(b"POST /upload HTTP/1.1\r\nHost: a\r\n"),
            Protocol::Http1
        );
        assert_eq!(Protocol::sniff(b"P"), Protocol::Undecided);
        assert_eq!(Protocol::sniff(b"PRI * HTTP/2"), Protocol::Undecided);
        assert_eq!(Protocol::sniff(b"PUT"), Protocol::Http1);
        assert_eq!(Protocol::sniff(H2_PREFACE), Protocol::Http2);
        let mut longer = H2_PREFACE.to_vec();
        longer.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(Protocol::sniff(&longer), Protocol::Http2);
    }

    #[test]
    fn alpn_decides_on_tls() {
        assert_eq!(Protocol::from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::from_alpn(None), Protocol::Undecided);
    }
}
