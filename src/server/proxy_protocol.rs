//! The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 balancer sends
//! before the client's own bytes: read between accept and TLS or HTTP on listeners with
//! `client_ip.proxy_protocol`, it names the client's address, which then stands for the
//! TCP peer (`X-Forwarded-For`, IP lists, logs).
//!
//! The [`ppp`] crate parses a header; this file owns the rest:
//!
//! - **whom to believe**: a header counts only from a peer in `trusted_proxies`. A
//!   listener that requires one closes connections from any other peer unread; an
//!   `optional` one serves them as they come, unless they send a header;
//! - **reading exactly the header**: its bytes are peeked, then only they are read, so
//!   that what follows (a TLS ClientHello, an HTTP request) is still in the socket for
//!   the next stage. The bytes are taken off one read at a time only while they are a
//!   strict prefix of both a header and something else (`P`, `\r\n`), at most 11; when
//!   they turn out not to be a header, they are handed back ([`Received::first`]);
//! - **bounds**: a version 1 header is at most [`V1_MAX_LENGTH`] bytes, a version 2 one
//!   16 bytes plus its addresses plus at most [`V2_MAX_TLV_BYTES`] of TLVs (read into a
//!   buffer of exactly the announced length, dropped once parsed). The first byte must
//!   come within the listener's `idle_timeout` (a balancer such as AWS NLB sends the
//!   header only with the client's first bytes), the rest within
//!   `proxy_protocol_timeout`;
//! - **failure**: the connection is closed without an answer (it is not HTTP yet),
//!   counted in `portcullis_proxy_protocol_connections_total` and logged at debug level.
//!
//! TLVs are checked for being well formed and otherwise skipped; a CRC32C TLV is not
//! verified.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use ipnet::IpNet;
use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ProxyProtocolConfig, ProxyProtocolMode};
use crate::metrics::{ProxyProtocolMetrics, ProxyProtocolOutcome};

/// The longest version 1 header, `\r\n` included (the specification's worst case).
pub const V1_MAX_LENGTH: usize = 107;
/// The most TLV bytes taken in a version 2 header, after its addresses. Balancers send
/// far fewer (AWS NLB: its endpoint id; HAProxy with every SSL TLV: a few hundred).
pub const V2_MAX_TLV_BYTES: usize = 2048;
/// A version 2 header's fixed part: signature, version and command, family, length.
const V2_FIXED_LENGTH: usize = 16;
/// The start of every version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The signature of every version 2 header.
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;

/// One listener's PROXY protocol settings and counters.
pub struct ProxyProtocol {
    mode: ProxyProtocolMode,
    /// From the header's first byte to its last.
    timeout: Duration,
    metrics: ProxyProtocolMetrics,
}

/// What a connection's start said about its client.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// The client: the header's source, or the TCP peer.
    pub client: SocketAddr,
    /// Bytes taken off the socket that were not a header after all: the first bytes of
    /// the client's own protocol, which the next stage must see first. Nearly always
    /// empty.
    pub first: BytesMut,
    pub outcome: ProxyProtocolOutcome,
}

/// Why a connection is closed before HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the peer is not in client_ip.trusted_proxies")]
    Untrusted,
    #[error("the client closed the connection before sending anything")]
    Closed,
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("a PROXY protocol {got} header, but the listener takes {expected}")]
    WrongVersion {
        got: &'static str,
        expected: &'static str,
    },
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(#[from] Malformed),
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[source] io::Error),
}

/// How a header is broken.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("version 1 header without CRLF in its first {V1_MAX_LENGTH} bytes")]
    V1TooLong,
    #[error("version 1: {0}")]
    V1(#[from] ppp::v1::BinaryParseError),
    #[error("version 1: {0} bytes after the header's CR before its LF")]
    V1AfterCarriageReturn(usize),
    #[error("version 2 header announces {0} bytes of TLVs; at most {V2_MAX_TLV_BYTES} are taken")]
    V2TooLong(usize),
    #[error("version 2: {0}")]
    V2(#[from] ppp::v2::ParseError),
    #[error("version 2 PROXY command for a datagram (UDP) flow on a TCP listener")]
    V2Datagram,
    #[error("the connection ended after {0} bytes of the header")]
    Truncated(usize),
}

impl HeaderError {
    pub fn outcome(&self) -> ProxyProtocolOutcome {
        match self {
            HeaderError::Untrusted => ProxyProtocolOutcome::Untrusted,
            HeaderError::Closed => ProxyProtocolOutcome::Closed,
            HeaderError::Timeout(_) => ProxyProtocolOutcome::Timeout,
            HeaderError::Missing => ProxyProtocolOutcome::Missing,
            HeaderError::WrongVersion { .. } => ProxyProtocolOutcome::WrongVersion,
            HeaderError::Malformed(_) => ProxyProtocolOutcome::Malformed,
            HeaderError::Io(_) => ProxyProtocolOutcome::Closed,
        }
    }
}

/// A header found at the start of a connection, not yet read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    V1,
    V2,
    /// Not a header: the client's own protocol.
    Other,
    /// A strict prefix of a header and of other things: more bytes tell.
    Undecided,
}

impl Start {
    fn of(bytes: &[u8]) -> Start {
        if bytes.starts_with(V1_PREFIX) {
            Start::V1
        } else if bytes.starts_with(V2_SIGNATURE) {
            Start::V2
        } else if V1_PREFIX.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes) {
            Start::Undecided
        } else {
            Start::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            Start::V1 => "v1",
            _ => "v2",
        }
    }
}

/// What a header said, once read.
enum Header {
    /// The client's address.
    Proxied(SocketAddr),
    /// v2 `LOCAL`: the balancer's own connection.
    Local,
    /// No address (v1 `UNKNOWN`, v2 `UNSPEC`, a Unix socket).
    Unknown,
}

impl ProxyProtocol {
    pub fn new(config: ProxyProtocolConfig, metrics: ProxyProtocolMetrics) -> Self {
        ProxyProtocol {
            mode: config.mode,
            timeout: config.timeout,
            metrics,
        }
    }

    /// Reads the header of a connection from `peer`, counts the outcome and logs a
    /// failure (at debug level: it is the peer's problem, and a scanner must not flood
    /// the log). `None`: close the connection.
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        trusted: &[IpNet],
        idle_timeout: Duration,
        listener: &str,
    ) -> Option<Received> {
        match self.read(stream, peer, trusted, idle_timeout).await {
            Ok(received) => {
                self.metrics.count(received.outcome);
                Some(received)
            }
            Err(error) => {
                let outcome = error.outcome();
                self.metrics.count(outcome);
                tracing::debug!(
                    listener,
                    %peer,
                    outcome = outcome.label(),
                    "closing a connection before HTTP: {error}"
                );
                None
            }
        }
    }

    /// Reads the header of a connection from `peer`: the client it names, or why the
    /// connection must be closed.
    pub async fn read(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        trusted: &[IpNet],
        idle_timeout: Duration,
    ) -> Result<Received, HeaderError> {
        let trusted = is_trusted(peer.ip(), trusted);
        let required = self.mode != ProxyProtocolMode::Optional;
        if required && !trusted {
            return Err(HeaderError::Untrusted);
        }
        let mut probe = [0u8; V2_FIXED_LENGTH];
        let peeked = match tokio::time::timeout(idle_timeout, stream.peek(&mut probe)).await {
            Err(_elapsed) => return Err(HeaderError::Timeout(idle_timeout)),
            Ok(Err(error)) => return Err(HeaderError::Io(error)),
            Ok(Ok(0)) => return Err(HeaderError::Closed),
            Ok(Ok(peeked)) => peeked,
        };
        let rest = self.read_header(stream, peer, trusted, &mut probe, peeked);
        match tokio::time::timeout(self.timeout, rest).await {
            Ok(result) => result,
            Err(_elapsed) => Err(HeaderError::Timeout(self.timeout)),
        }
    }

    /// Tells whether the connection starts with a header, and reads it. `probe` holds
    /// the first `peeked` bytes (at least one), and room for the bytes taken while that
    /// is undecided.
    async fn read_header(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        trusted: bool,
        probe: &mut [u8; V2_FIXED_LENGTH],
        mut peeked: usize,
    ) -> Result<Received, HeaderError> {
        // Bytes taken off the socket so far (a strict prefix of a header); a peek shows
        // `peeked` more after them.
        let mut taken = 0;
        let start = loop {
            match Start::of(&probe[..taken + peeked]) {
                // Taken off, so that the next peek waits for more instead of showing
                // the same bytes again. At most 11 bytes: the signature's length less
                // one.
                Start::Undecided => {
                    stream
                        .read_exact(&mut probe[taken..taken + peeked])
                        .await
                        .map_err(HeaderError::Io)?;
                    taken += peeked;
                    peeked = stream
                        .peek(&mut probe[taken..])
                        .await
                        .map_err(HeaderError::Io)?;
                    if peeked == 0 {
                        return Err(Malformed::Truncated(taken).into());
                    }
                }
                decided => break decided,
            }
        };
        let expected = match self.mode {
            ProxyProtocolMode::V1 => Some(Start::V1),
            ProxyProtocolMode::V2 => Some(Start::V2),
            ProxyProtocolMode::Any | ProxyProtocolMode::Optional => None,
        };
        match (start, expected) {
            (Start::Other, _) if self.mode == ProxyProtocolMode::Optional => {
                return Ok(Received {
                    client: peer,
                    first: BytesMut::from(&probe[..taken]),
                    outcome: ProxyProtocolOutcome::Absent,
                });
            }
            (Start::Other | Start::Undecided, _) => return Err(HeaderError::Missing),
            (got, Some(expected)) if got != expected => {
                return Err(HeaderError::WrongVersion {
                    got: got.name(),
                    expected: expected.name(),
                })
            }
            _ => {}
        }
        if !trusted {
            return Err(HeaderError::Untrusted);
        }
        let header = match start {
            Start::V1 => read_v1(stream, &probe[..taken]).await?,
            _ => read_v2(stream, &probe[..taken]).await?,
        };
        let (client, outcome) = match header {
            Header::Proxied(client) => (client, ProxyProtocolOutcome::Accepted),
            Header::Local => (peer, ProxyProtocolOutcome::Local),
            Header::Unknown => (peer, ProxyProtocolOutcome::Unknown),
        };
        Ok(Received {
            client,
            first: BytesMut::new(),
            outcome,
        })
    }
}

/// Whether `peer` (as IPv4 when it is IPv4-mapped) is in a trusted range.
fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|range| range.contains(&peer))
}

/// Reads a version 1 header up to its LF and no further; `taken`: its first bytes,
/// already read.
async fn read_v1(stream: &mut TcpStream, taken: &[u8]) -> Result<Header, HeaderError> {
    let mut line = [0u8; V1_MAX_LENGTH];
    line[..taken.len()].copy_from_slice(taken);
    let mut length = taken.len();
    loop {
        if length == V1_MAX_LENGTH {
            return Err(Malformed::V1TooLong.into());
        }
        let peeked = stream
            .peek(&mut line[length..])
            .await
            .map_err(HeaderError::Io)?;
        if peeked == 0 {
            return Err(Malformed::Truncated(length).into());
        }
        // Up to the LF when it is there, else all that came (then the next peek waits).
        let end = line[length..length + peeked]
            .iter()
            .position(|&byte| byte == b'\n')
            .map(|lf| lf + 1);
        let take = end.unwrap_or(peeked);
        stream
            .read_exact(&mut line[length..length + take])
            .await
            .map_err(HeaderError::Io)?;
        length += take;
        if end.is_some() {
            break;
        }
    }
    let line = &line[..length];
    let header = ppp::v1::Header::try_from(line).map_err(Malformed::V1)?;
    // ppp stops at the first CR; the line read goes on to the first LF.
    if header.header.len() != line.len() {
        return Err(Malformed::V1AfterCarriageReturn(line.len() - header.header.len()).into());
    }
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(ip) => {
            Header::Proxied(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v1::Addresses::Tcp6(ip) => {
            Header::Proxied(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v1::Addresses::Unknown => Header::Unknown,
    })
}

/// Reads a version 2 header: its fixed part, then exactly the length it announces;
/// `taken`: its first bytes, already read.
async fn read_v2(stream: &mut TcpStream, taken: &[u8]) -> Result<Header, HeaderError> {
    let mut fixed = [0u8; V2_FIXED_LENGTH];
    fixed[..taken.len()].copy_from_slice(taken);
    read_exactly(stream, &mut fixed[taken.len()..], taken.len()).await?;
    // Version, command, family and protocol are checked before the rest is read.
    let check = ppp::v2::Header::try_from(&fixed[..]);
    if check.is_complete() {
        check.map_err(Malformed::V2)?;
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let addresses = match fixed[13] & 0xF0 {
        0x10 => 12,
        0x20 => 36,
        0x30 => 216,
        _ => 0,
    };
    let tlvs = length.saturating_sub(addresses);
    if tlvs > V2_MAX_TLV_BYTES {
        return Err(Malformed::V2TooLong(tlvs).into());
    }
    let mut bytes = vec![0u8; V2_FIXED_LENGTH + length];
    bytes[..V2_FIXED_LENGTH].copy_from_slice(&fixed);
    read_exactly(stream, &mut bytes[V2_FIXED_LENGTH..], V2_FIXED_LENGTH).await?;
    let header = ppp::v2::Header::try_from(&bytes[..]).map_err(Malformed::V2)?;
    for tlv in header.tlvs() {
        tlv.map_err(Malformed::V2)?;
    }
    Ok(match (header.command, header.addresses) {
        (ppp::v2::Command::Local, _) => Header::Local,
        (_, _) if header.protocol == ppp::v2::Protocol::Datagram => {
            return Err(Malformed::V2Datagram.into())
        }
        (_, ppp::v2::Addresses::IPv4(ip)) => {
            Header::Proxied(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        (_, ppp::v2::Addresses::IPv6(ip)) => {
            Header::Proxied(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        (_, ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_)) => Header::Unknown,
    })
}

/// Fills `buffer` from the stream; the connection ending first is a truncated header
/// (`before`: the header's bytes read before these).
async fn read_exactly(
    stream: &mut TcpStream,
    buffer: &mut [u8],
    before: usize,
) -> Result<(), HeaderError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match stream.read(&mut buffer[filled..]).await {
            Ok(0) => return Err(Malformed::Truncated(before + filled).into()),
            Ok(n) => filled += n,
            Err(error) => return Err(HeaderError::Io(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn proxy(mode: ProxyProtocolMode) -> ProxyProtocol {
        let metrics = crate::metrics::Metrics::new().proxy_protocol("test");
        ProxyProtocol::new(
            ProxyProtocolConfig {
                mode,
                timeout: Duration::from_secs(5),
            },
            metrics,
        )
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().expect("range")]
    }

    /// A connected pair over loopback: (the gateway's side, the client's side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let client = TcpStream::connect(listener.local_addr().expect("address"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.expect("accepts").0, client.expect("connects"))
    }

    /// Sends `pieces` (each written alone), then reads the header with `mode`, then
    /// returns what is left in the socket once the client closes.
    async fn read_after(
        mode: ProxyProtocolMode,
        trusted: &[IpNet],
        pieces: &[&[u8]],
    ) -> (Result<Received, HeaderError>, Vec<u8>) {
        let (mut server, mut client) = pair().await;
        let peer = server.peer_addr().expect("peer");
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for piece in pieces {
                client.write_all(&piece).await.expect("writes");
                client.flush().await.expect("flushes");
                tokio::task::yield_now().await;
            }
            client.shutdown().await.expect("shuts down");
            client
        });
        let result = proxy(mode)
            .read(&mut server, peer, trusted, Duration::from_secs(5))
            .await;
        let _client = writer.await.expect("writer");
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (result, rest)
    }

    fn client_of(result: &Result<Received, HeaderError>) -> String {
        match result {
            Ok(received) => received.client.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[tokio::test]
    async fn exactly_the_v1_header_is_read_and_the_rest_stays_in_the_socket() {
        let (result, rest) = read_after(
            ProxyProtocolMode::V1,
            &loopback(),
            &[b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n"],
        )
        .await;
        assert_eq!(client_of(&result), "203.0.113.7:56324");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn exactly_the_v2_header_is_read_whatever_the_pieces() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            ppp::v2::IPv6::new(
                "2001:db8::7".parse::<std::net::Ipv6Addr>().expect("v6"),
                "2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6"),
                4711,
                443,
            ),
        )
        .write_tlv(ppp::v2::Type::Authority, b"example.com")
        .expect("TLV")
        .build()
        .expect("header");
        let mut whole = header.clone();
        whole.extend_from_slice(b"\x16\x03\x01");
        let (result, rest) = read_after(ProxyProtocolMode::V2, &loopback(), &[&whole]).await;
        assert_eq!(client_of(&result), "[2001:db8::7]:4711");
        assert_eq!(rest, b"\x16\x03\x01");

        let pieces: Vec<&[u8]> = header.chunks(1).chain([&b"rest"[..]]).collect();
        let (result, rest) = read_after(ProxyProtocolMode::Any, &loopback(), &pieces).await;
        assert_eq!(client_of(&result), "[2001:db8::7]:4711");
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn bytes_that_only_began_like_a_header_are_handed_back() {
        // `P` could begin `PROXY`, and `\r\n` the v2 signature: bytes like these are
        // taken off the socket while that is undecided, and given back once it is not.
        // (Whether the pieces are read apart here depends on scheduling; the
        // integration tests prove it with pieces read one by one.)
        for pieces in [
            &[&b"P"[..], b"OST / HTTP/1.1\r\n"][..],
            &[&b"\r\n"[..], b"\r\nGET"][..],
            &[&b"GET / HTTP/1.1\r\n"[..]][..],
        ] {
            let (result, left) = read_after(ProxyProtocolMode::Optional, &loopback(), pieces).await;
            let received = result.expect("served without a header");
            assert_eq!(received.outcome, ProxyProtocolOutcome::Absent);
            assert_eq!(received.client.ip().to_string(), "127.0.0.1");
            assert!(received.first.len() < V2_SIGNATURE.len());
            assert_eq!([&received.first[..], &left].concat(), pieces.concat());
        }
    }

    #[tokio::test]
    async fn headers_that_are_not_taken_say_why() {
        let outcome = |result: Result<Received, HeaderError>| match result {
            Ok(received) => received.outcome,
            Err(error) => error.outcome(),
        };
        let v2_local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Stream,
            ppp::v2::IPv4::new([10, 0, 0, 1], [10, 0, 0, 2], 1, 2),
        )
        .build()
        .expect("header");
        let elsewhere: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("range")];
        let here = loopback();
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
        let cases: Vec<(ProxyProtocolMode, &[IpNet], Vec<u8>, ProxyProtocolOutcome)> = vec![
            (
                ProxyProtocolMode::V2,
                &here,
                v2_local.clone(),
                ProxyProtocolOutcome::Local,
            ),
            (
                ProxyProtocolMode::V1,
                &here,
                v2_local.clone(),
                ProxyProtocolOutcome::WrongVersion,
            ),
            (
                ProxyProtocolMode::V2,
                &elsewhere,
                v2_local.clone(),
                ProxyProtocolOutcome::Untrusted,
            ),
            (
                ProxyProtocolMode::Optional,
                &elsewhere,
                v2_local.clone(),
                ProxyProtocolOutcome::Untrusted,
            ),
            (
                ProxyProtocolMode::Optional,
                &elsewhere,
                b"GET /".to_vec(),
                ProxyProtocolOutcome::Absent,
            ),
            (
                ProxyProtocolMode::V1,
                &here,
                b"PROXY UNKNOWN\r\n".to_vec(),
                ProxyProtocolOutcome::Unknown,
            ),
            (
                ProxyProtocolMode::V1,
                &here,
                long,
                ProxyProtocolOutcome::Malformed,
            ),
            (
                ProxyProtocolMode::V1,
                &here,
                b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n".to_vec(),
                ProxyProtocolOutcome::Malformed,
            ),
            (
                ProxyProtocolMode::Any,
                &here,
                v2_local[..20].to_vec(),
                ProxyProtocolOutcome::Malformed,
            ),
            (
                ProxyProtocolMode::Any,
                &here,
                b"PRO".to_vec(),
                ProxyProtocolOutcome::Malformed,
            ),
            (
                ProxyProtocolMode::Any,
                &here,
                b"GET / HTTP/1.1\r\n".to_vec(),
                ProxyProtocolOutcome::Missing,
            ),
            (
                ProxyProtocolMode::Any,
                &here,
                Vec::new(),
                ProxyProtocolOutcome::Closed,
            ),
        ];
        for (mode, trusted, bytes, expected) in cases {
            let (result, _) = read_after(mode, trusted, &[&bytes]).await;
            assert_eq!(
                outcome(result),
                expected,
                "{mode:?} {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[tokio::test]
    async fn a_v2_header_longer_than_the_cap_is_refused_before_it_is_read() {
        let mut header = ppp::v2::PROTOCOL_PREFIX.to_vec();
        let length = u16::try_from(12 + V2_MAX_TLV_BYTES + 1).expect("fits");
        header.extend_from_slice(&[0x21, 0x11]);
        header.extend_from_slice(&length.to_be_bytes());
        let (result, _) = read_after(ProxyProtocolMode::V2, &loopback(), &[&header]).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(Malformed::V2TooLong(n))) if n == V2_MAX_TLV_BYTES + 1),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn ipv4_mapped_peers_are_matched_as_ipv4() {
        assert!(is_trusted(
            "::ffff:127.0.0.1".parse().expect("v6"),
            &loopback()
        ));
        assert!(!is_trusted("::1".parse().expect("v6"), &loopback()));
    }
}
