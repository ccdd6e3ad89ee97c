//! The gateway's own HTTP/1.1 client, for upstreams with `protocol: http1` (the
//! default). One exchange runs inside the task that asked for it: the request head and
//! body are written, the response head read and parsed, and the response body decoded
//! as the caller polls it ([`PooledBody`]). When the body ends on a connection that
//! may be reused, the connection goes back to its pool
//! ([`super::connections::Http1Pool`]).
//!
//! hyper's client connection ran each upstream connection in a task of its own: a
//! request crossed to that task over a channel, the response came back over another,
//! and the body over a third. Here there are no crossings: the downstream connection's
//! task does the upstream I/O itself, as nginx's and Pingora's workers do.
//!
//! The request body is written in full before the response is read. An upstream that
//! answers early and closes (a 413 for an upload it refuses) has its answer passed on;
//! one that answers early but neither reads the rest nor closes makes the exchange wait
//! for its timeout. An upstream's `101 Switching Protocols` hands over the raw
//! connection ([`Upgraded`]); a `101` the request did not ask for is an error.
//! `103 Early Hints` go to the client through [`crate::interim`]; request trailers end
//! a chunked request body. Heads and bodies are framed by the shared codec
//! ([`crate::http1`]). An exchange abandoned after its request went out whole leaves
//! its connection to the pool's salvage ([`Connection::unfinished`]).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Weak;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::UPGRADE;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::connections::{Http1Pool, Stream};
use crate::body::BodyError;
use crate::http1::fields::chunk_size_line;
use crate::http1::request::{self, RequestFraming};
use crate::http1::response::{self, ResponseHead};
use crate::http1::{Decoded, Decoder, WireError};
use crate::interim;
use crate::io::Rewound;
use crate::upstream::UpstreamBody;

/// Spare room below which a read first makes space.
const MIN_READ_SPACE: usize = 1024;
/// The room a read makes when a body's length is unknown or small.
const READ_SIZE: usize = 8 * 1024;
/// The most room a read makes for a long body.
const MAX_READ_SIZE: usize = 64 * 1024;
/// How long a pooled connection must have been idle before its reuse asks the socket
/// itself whether the endpoint closed it ([`Connection::is_reusable`]).
pub const ASK_THE_SOCKET_AFTER: Duration = Duration::from_millis(100);
/// The most interim (`1xx`) responses read before the final one.
const MAX_INTERIM_RESPONSES: usize = 8;

/// One keep-alive connection to an endpoint, with what it has read but not used.
pub struct Connection {
    io: Stream,
    read: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    head: Vec<u8>,
    /// A request went out whole and its response head is being awaited: an exchange
    /// dropped at that moment leaves the response to read ([`Connection::unfinished`]).
    awaiting_head: bool,
}

/// What is left of a response whose exchange was abandoned.
pub enum Unfinished {
    /// Nothing that can be read to an end: the connection closes.
    Nothing,
    /// The whole response, to a request with this method.
    Head(Method),
    /// The rest of the body.
    Body(Decoder),
}

/// Why an exchange produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeFailure {
    #[error("{error}")]
    Io {
        #[source]
        error: io::Error,
        /// Some of a response had arrived.
        response_started: bool,
    },
    #[error("the upstream closed the connection {}", if *.response_started { "in the middle of the response head" } else { "without responding" })]
    Closed { response_started: bool },
    #[error(transparent)]
    Body(BodyError),
    #[error(transparent)]
    Wire(WireError),
}

impl ExchangeFailure {
    /// Nothing of a response arrived: the connection broke or was closed (for a pooled
    /// connection, typically by the endpoint while it was idle).
    pub fn before_response(&self) -> bool {
        matches!(
            self,
            ExchangeFailure::Io {
                response_started: false,
                ..
            } | ExchangeFailure::Closed {
                response_started: false
            }
        )
    }
}

/// A response head read, with how its body is framed and whether the connection may
/// be reused after it.
pub struct Exchanged {
    head: ResponseHead,
    decoder: Decoder,
    keep_alive: bool,
}

impl Connection {
    pub fn new(io: Stream) -> Self {
        Connection {
            io,
            read: BytesMut::new(),
            head: Vec::new(),
            awaiting_head: false,
        }
    }

    /// Whether a connection idle for `idle_for` can take a request: not closed by the
    /// endpoint, and nothing unexpected sent on it.
    ///
    /// First the runtime's record of the socket's readiness (free; for TLS, records
    /// already read are taken in, and anything they decrypt to is unexpected). That
    /// record can lag behind a close that has just arrived, so a connection idle for
    /// [`ASK_THE_SOCKET_AFTER`] or longer (long enough for an endpoint's keep-alive
    /// timeout to have closed it) is also checked with poll(2) on the socket itself,
    /// which reads its state without taking its lock. Asking the socket on every reuse
    /// cost 3-20% CPU per request under load (a peek: +16% at 1,000 connections;
    /// benches/RESULTS.md), for connections reused within microseconds.
    pub fn is_reusable(&mut self, idle_for: Duration) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut context = Context::from_waker(std::task::Waker::noop());
        if Pin::new(&mut self.io)
            .poll_read(&mut context, &mut probe)
            .is_ready()
        {
            return false;
        }
        if idle_for < ASK_THE_SOCKET_AFTER {
            return true;
        }
        let mut fds = [PollFd::new(self.io.tcp(), PollFlags::IN | PollFlags::RDHUP)];
        matches!(poll(&mut fds, Some(&Timespec::default())), Ok(0))
    }

    /// Sends the request (URI in origin form) and reads the response head, skipping
    /// interim `1xx` responses other than `101`.
    pub async fn exchange(
        &mut self,
        parts: &Parts,
        body: UpstreamBody,
        default_host: &HeaderValue,
    ) -> Result<Exchanged, ExchangeFailure> {
        let framing = request::request_framing(
            &parts.method,
            &parts.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        request::encode_request_head(
            &mut self.head,
            &parts.method,
            path,
            &parts.headers,
            default_host,
            framing,
        );
        let written = match self.write_request(framing, body).await {
            Ok(()) => self.io.flush().await.map_err(|error| ExchangeFailure::Io {
                error,
                response_started: false,
            }),
            Err(failure) => Err(failure),
        };
        let fully_written = written.is_ok();
        let head = match written {
            Ok(()) => {
                self.awaiting_head = true;
                let head = self.read_head().await;
                self.awaiting_head = false;
                head?
            }
            // An upstream that answers before reading the whole body (a 413, a 401) and
            // closes: its answer is already in the socket; pass it on.
            Err(failure @ ExchangeFailure::Io { .. }) => match self.read_head().await {
                Ok(head) => head,
                Err(_) => return Err(failure),
            },
            Err(failure) => return Err(failure),
        };
        if head.status == StatusCode::SWITCHING_PROTOCOLS && !parts.headers.contains_key(UPGRADE) {
            return Err(ExchangeFailure::Wire(WireError::Head(
                "101 Switching Protocols to a request that asked for no upgrade",
            )));
        }
        let framing =
            response::response_framing(&parts.method, &head).map_err(ExchangeFailure::Wire)?;
        let keep_alive = fully_written
            && head.status != StatusCode::SWITCHING_PROTOCOLS
            && response::keeps_alive(&head, framing);
        Ok(Exchanged {
            head,
            decoder: framing.decoder(),
            keep_alive,
        })
    }

    async fn write_request(
        &mut self,
        framing: RequestFraming,
        body: UpstreamBody,
    ) -> Result<(), ExchangeFailure> {
        let failed = |error| ExchangeFailure::Io {
            error,
            response_started: false,
        };
        let Connection { io, head, .. } = self;
        if framing == RequestFraming::Empty || body.is_end_stream() {
            return io.write_all(head).await.map_err(failed);
        }
        let chunked = framing == RequestFraming::Chunked;
        let mut body = pin!(body);
        // The head goes out with the body's first bytes, in one write.
        let mut pending_head: &[u8] = head;
        let mut terminated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ExchangeFailure::Body)?;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    // Trailers end a chunked body (filtered as a response's are); a body
                    // sent with a length has nowhere to carry them.
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        let mut end = pending_head.to_vec();
                        response::encode_last_chunk(&mut end, Some(&trailers));
                        io.write_all(&end).await.map_err(failed)?;
                        pending_head = &[];
                        terminated = true;
                        break;
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            let last = body.is_end_stream();
            let mut size_line = [0; 18];
            let (prefix, suffix): (&[u8], &[u8]) = match (chunked, last) {
                (false, _) => (&[], &[]),
                (true, false) => (chunk_size_line(data.len(), &mut size_line), b"\r\n"),
                (true, true) => (
                    chunk_size_line(data.len(), &mut size_line),
                    b"\r\n0\r\n\r\n",
                ),
            };
            let mut out = Buf::chain(Buf::chain(Buf::chain(pending_head, prefix), data), suffix);
            io.write_all_buf(&mut out).await.map_err(failed)?;
            pending_head = &[];
            if last {
                terminated = true;
                break;
            }
        }
        if !pending_head.is_empty() {
            io.write_all(pending_head).await.map_err(failed)?;
        }
        if chunked && !terminated {
            io.write_all(b"0\r\n\r\n").await.map_err(failed)?;
        }
        Ok(())
    }

    /// Reads the final response head (or a `101`), skipping at most
    /// [`MAX_INTERIM_RESPONSES`] interim `1xx` responses.
    async fn read_head(&mut self) -> Result<ResponseHead, ExchangeFailure> {
        let mut response_started = false;
        let mut interim = 0;
        loop {
            if !self.read.is_empty() {
                response_started = true;
                if let Some(head) =
                    response::parse_response_head(&mut self.read).map_err(ExchangeFailure::Wire)?
                {
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        if head.status == StatusCode::EARLY_HINTS {
                            interim::push(head.headers);
                        }
                        interim += 1;
                        if interim > MAX_INTERIM_RESPONSES {
                            return Err(ExchangeFailure::Wire(WireError::Head(
                                "too many interim 1xx responses",
                            )));
                        }
                        continue;
                    }
                    return Ok(head);
                }
            }
            make_room(&mut self.read, READ_SIZE);
            match self.io.read_buf(&mut self.read).await {
                Ok(0) => return Err(ExchangeFailure::Closed { response_started }),
                Ok(_) => {}
                Err(error) => {
                    return Err(ExchangeFailure::Io {
                        error,
                        response_started,
                    })
                }
            }
        }
    }
}

impl Connection {
    /// What an exchange of a `method` request dropped now would leave unread.
    pub fn unfinished(&mut self, method: &Method) -> Unfinished {
        if std::mem::take(&mut self.awaiting_head) {
            Unfinished::Head(method.clone())
        } else {
            Unfinished::Nothing
        }
    }

    /// Reads what is left of an abandoned response and throws it away: the connection,
    /// when it may carry another request (the response ended within `max_body_bytes`
    /// of body, allowed keep-alive, and nothing followed it).
    pub async fn finish(mut self, rest: Unfinished, max_body_bytes: u64) -> Option<Connection> {
        let mut decoder = match rest {
            Unfinished::Nothing => return None,
            Unfinished::Body(decoder) => decoder,
            Unfinished::Head(method) => {
                let head = self.read_head().await.ok()?;
                let framing = response::response_framing(&method, &head).ok()?;
                if head.status == StatusCode::SWITCHING_PROTOCOLS
                    || !response::keeps_alive(&head, framing)
                {
                    return None;
                }
                framing.decoder()
            }
        };
        let mut skipped = 0u64;
        loop {
            match decoder.decode(&mut self.read).ok()? {
                Some(Decoded::End) => break,
                Some(Decoded::Data(data)) => {
                    skipped += data.len() as u64;
                    if skipped > max_body_bytes {
                        return None;
                    }
                }
                Some(Decoded::Trailers(_)) => {}
                None => {
                    make_room(&mut self.read, READ_SIZE);
                    if self.io.read_buf(&mut self.read).await.ok()? == 0 {
                        return None;
                    }
                }
            }
            if decoder.is_done() {
                break;
            }
        }
        self.read.is_empty().then_some(self)
    }
}

/// Makes at least [`MIN_READ_SPACE`] bytes of room in `buf`, `size` when it allocates.
fn make_room(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < MIN_READ_SPACE {
        buf.reserve(size);
    }
}

impl Exchanged {
    /// The response, its body reading from `connection`; the connection returns to
    /// `pool` once the body has been read to its end, if it may be reused.
    pub fn into_response(
        self,
        connection: Connection,
        pool: Weak<Http1Pool>,
    ) -> Response<PooledBody> {
        let Exchanged {
            head,
            decoder,
            keep_alive,
        } = self;
        let mut body = PooledBody {
            connection: Some(connection),
            decoder,
            keep_alive,
            pool,
        };
        if body.decoder.is_done() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        response
    }
}

/// A response body failed mid-stream.
#[derive(Debug, thiserror::Error)]
pub enum BodyFailure {
    #[error("reading the upstream's response body failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A response body, decoded from its connection as it is polled.
pub struct PooledBody {
    /// `None` once the body has ended (the connection went back to its pool, or was
    /// closed) or failed.
    connection: Option<Connection>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Weak<Http1Pool>,
}

impl PooledBody {
    /// Gives the connection back to its pool, or closes it.
    fn finish(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.keep_alive && connection.read.is_empty() {
            if let Some(pool) = self.pool.upgrade() {
                pool.give_back(connection);
            }
        }
    }

    /// The connection of a `101 Switching Protocols` response, now a byte stream.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        let connection = self.connection.take()?;
        Some(Rewound::new(connection.io, connection.read))
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body ended but not polled to its end (hyper skips empty bodies) still
        // returns its connection; one dropped early (the client went away) has the rest
        // read by its pool, which keeps the connection when it can.
        if self.decoder.is_done() {
            self.finish();
        } else if self.keep_alive {
            if let (Some(connection), Some(pool)) = (self.connection.take(), self.pool.upgrade()) {
                pool.salvage(connection, Unfinished::Body(self.decoder));
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyFailure;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFailure>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut connection.read) {
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Ok(Some(Decoded::Data(data))) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(Decoded::Trailers(trailers))) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Some(Decoded::End)) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            let size = this.decoder.remaining().map_or(READ_SIZE, |left| {
                usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .clamp(READ_SIZE, MAX_READ_SIZE)
            });
            make_room(&mut connection.read, size);
            let read = pin!(connection.io.read_buf(&mut connection.read));
            match ready!(read.poll(cx)) {
                Ok(0) => {
                    this.connection = None;
                    this.keep_alive = false;
                    if let Err(error) = this.decoder.closed() {
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(error) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

/// An upstream connection after `101 Switching Protocols`: first the bytes already
/// read past the response head, then the connection itself.
pub type Upgraded = Rewound<Stream>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a peer that has just closed its end, before the runtime has had
    /// a chance to notice.
    fn closed_by_the_peer() -> Connection {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("address"))
            .expect("connects");
        let (server, _) = listener.accept().expect("accepts");
        drop(server);
        // The FIN is in the client's socket now; blocking until it is, on std's socket.
        let mut probe = [0u8; 1];
        client.set_nonblocking(false).expect("blocking");
        assert_eq!(client.peek(&mut probe).expect("peeks"), 0);
        client.set_nonblocking(true).expect("non-blocking");
        let io = tokio::net::TcpStream::from_std(client).expect("registers");
        Connection::new(Stream::Plain(io))
    }

    #[tokio::test]
    async fn a_connection_idle_long_enough_is_checked_on_the_socket_itself() {
        // The runtime has not turned its reactor since the close arrived: its record
        // says "not readable", which a connection reused at once is trusted on.
        let mut fresh = closed_by_the_peer();
        assert!(fresh.is_reusable(Duration::ZERO));
        // Idle long enough for an endpoint's keep-alive timeout to have closed it: the
        // socket is asked, and the close is seen.
        let mut idle = closed_by_the_peer();
        assert!(!idle.is_reusable(ASK_THE_SOCKET_AFTER));
        // Once the reactor has turned, the record knows too.
        tokio::task::yield_now().await;
        let mut known = closed_by_the_peer();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!known.is_reusable(Duration::ZERO));
    }
}
