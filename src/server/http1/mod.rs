//! The gateway's HTTP/1.1 server: one client connection's requests read, answered and
//! written back in the connection's own task (RFC 9112).
//!
//! The life of a connection: wait for a request head (the idle timeout runs from the
//! end of the previous response), parse it, hand the request to the proxy, and while
//! the proxy works keep reading from the client: the request body as the proxy asks for
//! it ([`body`]), or else watch for the client going away (which cancels the request)
//! and buffer any pipelined request. The response head goes out with the body's first
//! bytes in one write. Then the connection waits for the next request, or closes, or,
//! after `101 Switching Protocols`, is handed to the proxy as a tunnel.
//!
//! An idle connection holds no buffer: reads start on the stack, and the request's
//! bytes are copied into a buffer of their own size only once they have arrived.
//! Heads and bodies are framed by the shared codec ([`crate::http1`]); hyper serves
//! HTTP/2 ([`super::connection`]). An upstream's `103 Early Hints` are written before
//! the final response ([`crate::interim`]).

mod writer;

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::body::http1::{self as body, BodyFeed, Demand};
use crate::body::{BoxError, ClientBody, RequestBodyError};
use crate::http1::request::{self, BodyFraming, ConnectionWishes, HeadError, RequestHead};
use crate::http1::response::{self, ConnectionHeader, ResponseFraming};
use crate::http1::Decoder;
use crate::interim::{self, Hints};
use crate::io::{ClientUpgrade, Rewound, TunnelIo, TunnelSender};
use crate::proxy::{respond, CloseConnection, Dialect, ProxyError, ResponseBody};
use crate::server::ConnectionContext;
use crate::shutdown::{signalled, Shutdown};
use writer::ResponseWriter;

/// Bytes read onto the stack while no buffer is held.
const FIRST_READ: usize = 8 * 1024;
/// Room made in the buffer for each further read.
const READ_CHUNK: usize = 16 * 1024;
/// `Expect: 100-continue` answered.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long, and how many bytes, a closing connection reads and throws away so that
/// the client sees the final response instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// The request the proxy gets from a checked head: its body fed from the connection
/// (`feed` is the connection's end), and for an upgrade, where the connection goes once
/// the `101` is written.
#[inline(always)]
fn into_request(
    head: RequestHead,
    wishes: &ConnectionWishes,
    framing: BodyFraming,
) -> (Request<ClientBody>, Option<BodyFeed>, Option<TunnelSender>) {
    let (feed, body) = match framing {
        BodyFraming::None => (None, ClientBody::Empty),
        BodyFraming::Length(length) => {
            let decoder = Decoder::length(length);
            let (feed, body) = body::channel(decoder, Some(length), wishes.expects_continue);
            (Some(feed), ClientBody::Http1(body))
        }
        BodyFraming::Chunked => {
            let (feed, body) = body::channel(Decoder::chunked(), None, wishes.expects_continue);
            (Some(feed), ClientBody::Http1(body))
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    let upgrade = wishes.upgrade.then(|| {
        let (upgrade, sender) = ClientUpgrade::pending();
        request.extensions_mut().insert(upgrade);
        sender
    });
    (request, feed, upgrade)
}

/// Where the connection is, as its drain needs to know.
struct Phase {
    /// The gateway drains: answer what was asked, then close.
    draining: AtomicBool,
    /// Waiting for a request with nothing buffered.
    idle: AtomicBool,
}

/// How long a drain waits for the next request of an idle connection before closing
/// it. Closing at once would fail the requests already on their way: a client that has
/// just connected, or one that sent on its keep-alive connection as the close crossed
/// it, cannot tell whether the request was processed, and only the idempotent ones may
/// be resent. A request that arrives within this is answered with `Connection: close`.
pub(super) const IDLE_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 on `io` until the client closes it, it idles out, or the gateway
/// drains (a request being answered is finished, with `Connection: close`; an idle
/// connection gets [`IDLE_DRAIN_GRACE`] to send one more) or closes.
///
/// `first` holds bytes already read from the client; `close_notify`: closing needs an
/// orderly end of stream (TLS's close notification), which plain TCP's close gives.
pub async fn serve<S>(
    io: S,
    first: BytesMut,
    close_notify: bool,
    context: &ConnectionContext,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Phase {
        draining: AtomicBool::new(false),
        idle: AtomicBool::new(false),
    };
    let Shutdown {
        mut drain,
        mut close,
        ..
    } = shutdown;
    let connection = Connection {
        io,
        hints: Hints::default(),
        hints_out: Vec::new(),
        hints_written: 0,
        read: first,
        eof: false,
        close_notify,
        limits: context.listener.limits,
    };
    let mut run = std::pin::pin!(connection.run(context, &phase));
    tokio::select! {
        biased;
        () = &mut run => return,
        () = signalled(&mut drain) => {}
    }
    phase.draining.store(true, Ordering::Relaxed);
    if phase.idle.load(Ordering::Relaxed) {
        tokio::select! {
            biased;
            () = &mut run => return,
            () = signalled(&mut close) => return,
            () = tokio::time::sleep(IDLE_DRAIN_GRACE) => {
                if phase.idle.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    }
    tokio::select! {
        biased;
        () = &mut run => {}
        () = signalled(&mut close) => {}
    }
}

struct Connection<S> {
    io: S,
    /// Where an upstream's `103 Early Hints` for the current request arrive.
    hints: Hints,
    /// Early hints encoded and not yet written, and how much of them was.
    hints_out: Vec<u8>,
    hints_written: usize,
    /// Bytes read and not used yet; no allocation while there are none.
    read: BytesMut,
    /// The client has closed its side.
    eof: bool,
    close_notify: bool,
    limits: crate::config::ClientLimits,
}

/// What follows a response.
enum After {
    KeepAlive,
    /// Close; `linger`: the client may still be sending (an unread body).
    Close {
        linger: bool,
    },
    Upgrade(oneshot::Sender<Box<dyn TunnelIo>>),
}

/// Something happened on the client's side while a request was being answered.
enum ClientEvent {
    /// A body frame was handed over or bytes were buffered: poll the request again.
    Progress,
    /// The client closed the connection or it failed.
    Gone,
}

/// Why a response could not be written to its end.
#[derive(Debug, thiserror::Error)]
enum WriteFailure {
    #[error("writing to the client failed: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection")]
    ClientGone,
    #[error("the response body failed: {0}")]
    Body(BoxError),
    #[error("the response body does not match its length")]
    Length,
    #[error("the client took none of the response for {0:?}")]
    Stalled(Duration),
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(mut self, context: &ConnectionContext, phase: &Phase) {
        let mut idle_timer = std::pin::pin!(tokio::time::sleep(self.limits.idle_timeout));
        loop {
            let head = match self.next_head(context, phase, idle_timer.as_mut()).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(error) => {
                    self.refuse(error, None, context).await;
                    return self.close(true).await;
                }
            };
            // Boxed: answering (the proxy's future within) takes a few KiB, which an
            // idle connection's task should not carry.
            match Box::pin(self.answer(head, context, phase, idle_timer.as_mut())).await {
                After::KeepAlive => {}
                After::Close { linger } => return self.close(linger).await,
                After::Upgrade(sender) => {
                    let tunnel = Rewound::new(self.io, self.read);
                    let _ = sender.send(Box::new(tunnel));
                    return;
                }
            }
        }
    }

    /// The next request head: from what is buffered (a pipelined request), or read within
    /// the idle timeout. `Ok(None)`: close quietly (the client closed, went silent, or
    /// the read failed).
    ///
    /// `idle_timer` is the connection's one timer, moved only lazily: when it fires
    /// before the current wait's deadline it is set again, so a busy connection touches
    /// the runtime's timer wheel about once per idle timeout, not once per request.
    async fn next_head(
        &mut self,
        context: &ConnectionContext,
        phase: &Phase,
        mut idle_timer: Pin<&mut Sleep>,
    ) -> Result<Option<RequestHead>, HeadError> {
        if let Some(head) = self.parse_head()? {
            return Ok(Some(head));
        }
        if self.read.is_empty() {
            // Lets go of the last request's buffer (its head may still share it).
            self.read = BytesMut::new();
        }
        phase.idle.store(self.read.is_empty(), Ordering::Relaxed);
        let idle_timeout = self.limits.idle_timeout;
        let deadline = Instant::now() + idle_timeout;
        let reading = async {
            loop {
                if self.eof {
                    return Ok(None);
                }
                match poll_fn(|cx| self.poll_fill(cx, false)).await {
                    Ok(0) | Err(_) => {
                        self.eof = true;
                        return Ok(None);
                    }
                    Ok(_) => {
                        phase.idle.store(false, Ordering::Relaxed);
                        if let Some(head) = self.parse_head()? {
                            return Ok(Some(head));
                        }
                    }
                }
            }
        };
        let mut reading = std::pin::pin!(reading);
        poll_fn(|cx| {
            if let Poll::Ready(head) = reading.as_mut().poll(cx) {
                return Poll::Ready(head);
            }
            ready!(poll_deadline(idle_timer.as_mut(), deadline, cx));
            let timeouts = &context.listener.timeouts;
            if phase.idle.load(Ordering::Relaxed) {
                timeouts.idle.inc();
                tracing::debug!("closing a connection idle for {idle_timeout:?}");
            } else {
                timeouts.head.inc();
                tracing::debug!(
                    "closing a connection whose request head did not arrive within {idle_timeout:?}"
                );
            }
            Poll::Ready(Ok(None))
        })
        .await
    }

    fn parse_head(&mut self) -> Result<Option<RequestHead>, HeadError> {
        if self.read.is_empty() {
            return Ok(None);
        }
        request::parse_request_head(
            &mut self.read,
            self.limits.max_header_size,
            self.limits.max_headers,
        )
    }

    /// Reads what the client sent into the buffer; `Ok(0)`: end of file. With nothing
    /// buffered (and no body coming, whose reads should not be copied), the read goes
    /// onto the stack first, so that waiting holds no buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>, body: bool) -> Poll<io::Result<usize>> {
        if self.read.is_empty() && !body {
            let mut scratch = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut filled = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut filled))?;
            let filled = filled.filled();
            if !filled.is_empty() {
                self.read = BytesMut::with_capacity(filled.len());
                self.read.extend_from_slice(filled);
            }
            return Poll::Ready(Ok(filled.len()));
        }
        if self.read.capacity() - self.read.len() < 1024 {
            self.read.reserve(READ_CHUNK);
        }
        let read = std::pin::pin!(self.io.read_buf(&mut self.read));
        read.poll(cx)
    }

    /// Reads from the client while a request is answered: body bytes while the body's
    /// consumer asks for them; otherwise, watching for the client going away, and
    /// buffering a pipelined request (up to the head size limit).
    fn poll_client(
        &mut self,
        feed: Option<&mut BodyFeed>,
        cx: &mut Context<'_>,
    ) -> Poll<ClientEvent> {
        if let Some(feed) = feed {
            if !feed.is_read() {
                return match feed.demand(cx) {
                    Demand::Wanted => self.poll_feed(feed, cx),
                    // Nothing more is read until the body is read or given up.
                    Demand::NotYet | Demand::Abandoned | Demand::Finished => Poll::Pending,
                };
            }
        }
        if self.eof {
            return Poll::Pending;
        }
        while self.read.len() < self.limits.max_header_size {
            match ready!(self.poll_fill(cx, false)) {
                Ok(0) | Err(_) => {
                    self.eof = true;
                    return Poll::Ready(ClientEvent::Gone);
                }
                Ok(_) => {}
            }
        }
        Poll::Pending
    }

    /// Hands the body's consumer its next frame, reading as needed.
    fn poll_feed(&mut self, feed: &mut BodyFeed, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        loop {
            if feed.decode_into_slot(&mut self.read, cx) {
                return Poll::Ready(ClientEvent::Progress);
            }
            if feed.owes_continue {
                if self.hints_written < self.hints_out.len() {
                    // An early hint is half written; its write wakes this task.
                    return Poll::Pending;
                }
                if let Err(error) = ready!(self.poll_write_continue(feed, cx)) {
                    feed.fail(RequestBodyError::Io(error.to_string()), cx);
                    self.eof = true;
                    return Poll::Ready(ClientEvent::Progress);
                }
            }
            if self.eof {
                feed.fail(RequestBodyError::Truncated, cx);
                return Poll::Ready(ClientEvent::Progress);
            }
            match ready!(self.poll_fill(cx, true)) {
                Ok(0) => {
                    self.eof = true;
                    feed.fail(RequestBodyError::Truncated, cx);
                    return Poll::Ready(ClientEvent::Progress);
                }
                Ok(_) => {}
                Err(error) => {
                    self.eof = true;
                    feed.fail(RequestBodyError::Io(error.to_string()), cx);
                    return Poll::Ready(ClientEvent::Progress);
                }
            }
        }
    }

    /// Writes the `103 Early Hints` the upstream has sent so far. `Ready(Ok)`: all
    /// written; `Pending`: the client is not taking them yet (the request goes on).
    fn poll_write_hints(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.hints_written == self.hints_out.len() {
            self.hints_out.clear();
            self.hints_written = 0;
        }
        for fields in self.hints.take() {
            response::encode_early_hints(&mut self.hints_out, &fields);
        }
        while self.hints_written < self.hints_out.len() {
            let rest = &self.hints_out[self.hints_written..];
            match ready!(Pin::new(&mut self.io).poll_write(cx, rest))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.hints_written += n,
            }
        }
        if !self.hints_out.is_empty() {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.hints_out.clear();
            self.hints_written = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `100 Continue`: the client waits for it before sending its body.
    fn poll_write_continue(
        &mut self,
        feed: &mut BodyFeed,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while feed.continue_written < CONTINUE.len() {
            let rest = &CONTINUE[feed.continue_written..];
            match ready!(Pin::new(&mut self.io).poll_write(cx, rest))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => feed.continue_written += n,
            }
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        feed.owes_continue = false;
        Poll::Ready(Ok(()))
    }

    /// Answers one request: runs the proxy on it, then writes its response. A client
    /// that takes none of the response for the idle timeout is disconnected.
    async fn answer(
        &mut self,
        mut head: RequestHead,
        context: &ConnectionContext,
        phase: &Phase,
        idle_timer: Pin<&mut Sleep>,
    ) -> After {
        let checked = request::check_head(&mut head, self.limits.headers_with_underscores);
        let (wishes, framing) = match checked {
            Ok(checked) => {
                if checked.dropped_fields > 0 {
                    let dropped = checked.dropped_fields as u64;
                    context.listener.header_fields_dropped.inc_by(dropped);
                }
                (checked.wishes, checked.framing)
            }
            Err(error) => {
                self.refuse(error, Some(&head.method), context).await;
                return After::Close { linger: true };
            }
        };
        let (is_head, version) = (head.method == Method::HEAD, head.version);
        // Interim responses are for HTTP/1.1 clients only (RFC 9110 §15.2).
        let wants_hints = version == Version::HTTP_11 && !wishes.upgrade;
        let (request, mut feed, upgrade) = into_request(head, &wishes, framing);
        self.hints.reset();

        // The proxy's future is pinned where it is made (made elsewhere and moved here,
        // it would take its kilobytes twice in this future).
        let handler = std::pin::pin!(context.handle(request));
        let Some(response) = self.drive(handler, wants_hints, &mut feed).await else {
            tracing::debug!("the client closed its connection before the response");
            return After::Close { linger: false };
        };
        if !self.finish_interim(feed.as_mut()).await {
            return After::Close { linger: false };
        }

        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        let framing = if switching {
            ResponseFraming::Empty
        } else {
            ResponseFraming::choose(is_head, status, version, body.size_hint().exact())
        };
        let close = self.must_close(&wishes, &parts, feed.as_mut(), phase, framing)
            || (switching && upgrade.is_none());
        let connection = if switching {
            ConnectionHeader::Upgrade
        } else if close {
            ConnectionHeader::Close
        } else if version == Version::HTTP_10 {
            ConnectionHeader::KeepAlive
        } else {
            ConnectionHeader::Omitted
        };
        let mut writer = ResponseWriter::new(framing);
        response::encode_response_head(
            &mut writer.bytes,
            status,
            &parts.headers,
            framing,
            connection,
        );
        let written = self
            .write_response(&mut writer, &mut body, feed.as_mut(), idle_timer, context)
            .await;
        drop(body);
        if let Err(error) = written {
            tracing::debug!("response to the client cut short: {error}");
            return After::Close { linger: false };
        }
        if switching {
            if let Some(upgrade) = upgrade.filter(|_| !close) {
                return After::Upgrade(upgrade);
            }
        }
        let body_read = match feed.as_mut() {
            None => true,
            Some(feed) => feed.is_read() || feed.discard_buffered(&mut self.read),
        };
        if close || !body_read {
            return After::Close { linger: !body_read };
        }
        After::KeepAlive
    }

    /// Runs the proxy's `handler` while the client is read from (its body, as the proxy
    /// asks for it) and early hints are written; `None` when the client went away.
    async fn drive(
        &mut self,
        mut handler: Pin<&mut impl Future<Output = Response<ResponseBody>>>,
        wants_hints: bool,
        feed: &mut Option<BodyFeed>,
    ) -> Option<Response<ResponseBody>> {
        poll_fn(|cx| loop {
            let collecting = wants_hints.then(|| interim::Collecting::start(&mut self.hints));
            let polled = handler.as_mut().poll(cx);
            drop(collecting);
            if let Poll::Ready(response) = polled {
                return Poll::Ready(Some(response));
            }
            // Never in the middle of a `100 Continue`: one interim response at a time.
            let continue_started = feed
                .as_ref()
                .is_some_and(|feed| feed.owes_continue && feed.continue_written > 0);
            let hints_waiting = !self.hints.is_empty() || self.hints_written < self.hints_out.len();
            if hints_waiting && !continue_started {
                if let Poll::Ready(Err(error)) = self.poll_write_hints(cx) {
                    tracing::debug!("writing early hints to the client failed: {error}");
                    return Poll::Ready(None);
                }
            }
            match ready!(self.poll_client(feed.as_mut(), cx)) {
                ClientEvent::Progress => {}
                ClientEvent::Gone => return Poll::Ready(None),
            }
        })
        .await
    }

    /// Before the final response: a `100 Continue` half written is finished, and the
    /// early hints that arrived go out. `false` when the client could not take them.
    async fn finish_interim(&mut self, mut feed: Option<&mut BodyFeed>) -> bool {
        if let Some(feed) = feed.as_deref_mut().filter(|feed| feed.continue_written > 0) {
            if poll_fn(|cx| self.poll_write_continue(feed, cx))
                .await
                .is_err()
            {
                return false;
            }
        }
        if let Some(feed) = feed {
            feed.owes_continue = false;
        }
        if !self.hints.is_empty() || self.hints_written < self.hints_out.len() {
            let idle_timeout = self.limits.idle_timeout;
            let writing = poll_fn(|cx| self.poll_write_hints(cx));
            let written = tokio::time::timeout(idle_timeout, writing).await;
            if !matches!(written, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }

    /// Whether the connection closes after this response: the client or the answer
    /// asked for it, the request's body cannot be skipped or was malformed, the client
    /// ended its side, the gateway drains, or the body runs until the close.
    fn must_close(
        &mut self,
        wishes: &ConnectionWishes,
        parts: &http::response::Parts,
        feed: Option<&mut BodyFeed>,
        phase: &Phase,
        framing: ResponseFraming,
    ) -> bool {
        // A body its consumer gave up on: what is buffered of it is skipped; the rest
        // would have to be read, so the connection closes after this response.
        let (body_left, framing_broken) = match feed {
            Some(feed) => (
                feed.is_abandoned() && !feed.discard_buffered(&mut self.read),
                feed.is_broken(),
            ),
            None => (false, false),
        };
        !wishes.keep_alive
            || parts.extensions.get::<CloseConnection>().is_some()
            || body_left
            || framing_broken
            || self.eof
            || phase.draining.load(Ordering::Relaxed)
            || framing == ResponseFraming::UntilClose
    }

    /// Writes the response head and body as the client takes them, reading what the
    /// client sends meanwhile; fails when the client stalls for the idle timeout.
    async fn write_response(
        &mut self,
        writer: &mut ResponseWriter,
        body: &mut ResponseBody,
        mut feed: Option<&mut BodyFeed>,
        mut idle_timer: Pin<&mut Sleep>,
        context: &ConnectionContext,
    ) -> Result<(), WriteFailure> {
        let send_timeout = self.limits.idle_timeout;
        let mut stalled_until = None;
        poll_fn(|cx| loop {
            if let Poll::Ready(result) = self.poll_write_response(writer, body, cx) {
                return Poll::Ready(result);
            }
            if std::mem::take(&mut writer.progressed) || !writer.blocked {
                stalled_until = None;
            }
            if writer.blocked {
                let deadline = *stalled_until.get_or_insert_with(|| Instant::now() + send_timeout);
                if poll_deadline(idle_timer.as_mut(), deadline, cx).is_ready() {
                    context.listener.timeouts.response.inc();
                    return Poll::Ready(Err(WriteFailure::Stalled(send_timeout)));
                }
            }
            match ready!(self.poll_client(feed.as_deref_mut(), cx)) {
                ClientEvent::Progress => {}
                ClientEvent::Gone => return Poll::Ready(Err(WriteFailure::ClientGone)),
            }
        })
        .await
    }

    /// Writes the response: pending bytes first (the head, chunk framing, a body frame),
    /// taking the body's next frame whenever the previous one's data is out, so that the
    /// head and chunk framing go out together with data.
    fn poll_write_response(
        &mut self,
        writer: &mut ResponseWriter,
        body: &mut ResponseBody,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteFailure>> {
        loop {
            if !writer.finished && writer.data.is_empty() {
                writer.suffix_into_bytes();
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        writer.push_frame(frame)?;
                        // A body that knows it has ended (the last chunk came with the
                        // data) ends the response in the same write.
                        if !writer.finished && body.is_end_stream() {
                            writer.finish()?;
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(WriteFailure::Body(error)))
                    }
                    Poll::Ready(None) => writer.finish()?,
                    Poll::Pending if writer.is_empty() => {
                        writer.blocked = true;
                        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                        writer.blocked = false;
                        return Poll::Pending;
                    }
                    Poll::Pending => {}
                }
            }
            if writer.is_empty() {
                if writer.finished {
                    writer.blocked = true;
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    writer.blocked = false;
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            writer.blocked = true;
            let slices = writer.slices();
            match ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices)) {
                Ok(0) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                Ok(written) => {
                    writer.blocked = false;
                    writer.progressed = true;
                    writer.advance(written);
                }
                Err(error) => return Poll::Ready(Err(error.into())),
            }
        }
    }

    /// Answers a request that cannot be served (malformed, too large) with its error,
    /// counted and logged like any other answer.
    async fn refuse(
        &mut self,
        error: HeadError,
        method: Option<&Method>,
        context: &ConnectionContext,
    ) {
        let refusal = match error {
            HeadError::TooLarge { limit } => ProxyError::HeadTooLarge { limit },
            HeadError::TooManyHeaders { limit } => ProxyError::TooManyHeaders { limit },
            HeadError::UriTooLong => ProxyError::UriTooLong {
                limit: self.limits.max_uri_length,
            },
            HeadError::Malformed(what) => ProxyError::BadRequest(what),
            HeadError::UnsupportedCoding => ProxyError::UnsupportedTransferCoding,
            HeadError::UnsupportedExpectation => ProxyError::ExpectationFailed,
        };
        let request_id = crate::request_id::generate_request_id();
        let rescued = respond::rescue(&refusal);
        tracing::debug!(
            request_id = request_id.to_str().unwrap_or_default(),
            status = rescued.status.as_u16(),
            "refused a request: {}",
            rescued.detail
        );
        context.refused(method, rescued.status, rescued.code, &request_id);
        let response = respond::response(
            &refusal,
            &rescued,
            &request_id,
            context.listener.error_detail,
            Dialect::Json,
        );
        let (parts, body) = response.into_parts();
        let length = body.size_hint().exact().unwrap_or(0);
        let mut out = Vec::new();
        response::encode_response_head(
            &mut out,
            parts.status,
            &parts.headers,
            ResponseFraming::Length(length),
            ConnectionHeader::Close,
        );
        if let ResponseBody::Full(Some(bytes)) = body {
            out.extend_from_slice(&bytes);
        }
        let _ = tokio::time::timeout(self.limits.idle_timeout, self.io.write_all(&out)).await;
    }

    /// Closes the connection: end of stream (with TLS, its close notification), then,
    /// with `linger`, what the client still sends is read and thrown away for a while,
    /// so that closing with unread bytes does not reset the connection under the
    /// response the client has not read yet.
    async fn close(mut self, linger: bool) {
        if !linger && !self.close_notify {
            return;
        }
        let closing = async {
            let _ = self.io.shutdown().await;
            if linger {
                // On the heap: a buffer in this future would be in every connection's task.
                let mut scratch = vec![0u8; 4096];
                let mut left = LINGER_BYTES;
                while left > 0 {
                    match self.io.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, closing).await;
    }
}

/// Resolves once `deadline` has passed, with the connection's one timer. The timer is
/// set again only when it fires early: deadlines only move later (each is now plus
/// the idle timeout), so a timer set earlier never fires after the current deadline.
fn poll_deadline(mut timer: Pin<&mut Sleep>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        ready!(timer.as_mut().poll(cx));
        if timer.deadline() >= deadline {
            return Poll::Ready(());
        }
        timer.as_mut().reset(deadline);
    }
}
