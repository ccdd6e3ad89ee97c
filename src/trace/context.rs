//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): trace and span ids, the
//! `traceparent` header parsed strictly (version `00`, exact lengths, lowercase hex,
//! ids not all zero) and written, and `tracestate` checked before it is passed on.

use http::HeaderValue;

/// `traceparent`.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// A trace's 16-byte id, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span's 8-byte id, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random id (never all zero).
    pub fn random() -> Self {
        TraceId(fastrand::u128(1..).to_be_bytes())
    }

    /// The 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut out = [0u8; 32];
        write_hex(&self.0, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Its last 8 bytes as a number: what ratio sampling compares (W3C trace ids are
    /// random there, whoever made them).
    pub fn random_part(self) -> u64 {
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(low)
    }
}

impl SpanId {
    /// A random id (never all zero).
    pub fn random() -> Self {
        SpanId(fastrand::u64(1..).to_be_bytes())
    }
}

/// A valid `traceparent`: whose trace this is, the caller's span, and whether the caller
/// sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything but a well-formed version `00`
    /// header with non-zero ids (the caller then starts a new trace).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() != TRACEPARENT_LEN
            || &value[..3] != b"00-"
            || value[35] != b'-'
            || value[52] != b'-'
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        read_hex(&value[3..35], &mut trace_id)?;
        read_hex(&value[36..52], &mut parent_id)?;
        read_hex(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The header value for a request sent from span `span` of `trace_id`.
    pub fn header(trace_id: TraceId, span: SpanId, sampled: bool) -> HeaderValue {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&trace_id.0, &mut out[3..35]);
        write_hex(&span.0, &mut out[36..52]);
        out[54] = if sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The longest `tracestate` passed on, and its most list members (W3C: 32; a longer
/// one may be cut, and the gateway drops it instead).
const TRACESTATE_MAX_LEN: usize = 512;
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Whether a `tracestate` value may be passed on: bounded, printable ASCII, each member
/// `key=value`, at most 32 of them.
pub fn tracestate_is_valid(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > TRACESTATE_MAX_LEN {
        return false;
    }
    if !bytes.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        return false;
    }
    let mut members = 0;
    for member in bytes.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        if eq == 0 || eq + 1 == member.len() {
            return false;
        }
    }
    (1..=TRACESTATE_MAX_MEMBERS).contains(&members)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
}

/// Lowercase hex only, as W3C requires.
fn read_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parent = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert!(parent.sampled);
        assert_eq!(parent.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = VALID.replace("-01", "-00");
        assert!(
            !TraceParent::parse(unsampled.as_bytes())
                .expect("valid")
                .sampled
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn written_headers_read_back() {
        let (trace, span) = (TraceId::random(), SpanId::random());
        let header = TraceParent::header(trace, span, true);
        let read = TraceParent::parse(header.as_bytes()).expect("valid");
        assert_eq!(
            (read.trace_id, read.parent_id, read.sampled),
            (trace, span, true)
        );
    }

    #[test]
    fn tracestate_is_bounded() {
        assert!(tracestate_is_valid(&HeaderValue::from_static(
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        )));
        assert!(!tracestate_is_valid(&HeaderValue::from_static("novalue")));
        assert!(!tracestate_is_valid(&HeaderValue::from_static("=x")));
        let long = "a=b,".repeat(40);
        assert!(!tracestate_is_valid(
            &HeaderValue::from_str(&long).expect("ascii")
        ));
    }
}
