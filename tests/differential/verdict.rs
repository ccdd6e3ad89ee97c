//! What one input's two readings mean: compared field by field after the
//! normalisations Portcullis makes on purpose, then sorted into agreement, Portcullis
//! stricter, both refusing, a documented difference (laxer-but-safe, or a known
//! finding), or a failure. The classes of documented differences are defined here, each
//! by what the message's head says, so that they cannot hide anything else.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use portcullis::config::UnderscoreHeaders;
use portcullis::http1::fields::{self as rules, Codings};

use crate::hyper_side::{HyperRequests, HyperResponse, SeenRequest, SeenResponse};
use crate::portcullis_side::{End, Fields, Request, Requests, Response, ResponseOutcome};

/// A documented difference: hyper refuses what Portcullis reads, on purpose and safely.
pub const LAXER_LENGTH_LIST: &str = "Content-Length as a list of one repeated value \
    (`5, 5`): hyper refuses the request, Portcullis reads the one value (RFC 9110 §8.6 \
    allows either)";
/// A documented difference: hyper refuses what Portcullis reads, on purpose and safely.
pub const LAXER_EMPTY_CODINGS: &str = "Transfer-Encoding with empty list elements \
    (`chunked,`, or an empty `Transfer-Encoding` line after `chunked`): hyper reads only \
    the last element of the last line and refuses the request, Portcullis ignores empty \
    elements (RFC 9110 §5.6.1: recipients MUST) and reads `chunked`";
/// A documented difference: hyper refuses what Portcullis reads, on purpose and safely.
pub const LAXER_EXTENSIONS_TOTAL: &str = "chunk extensions adding up to 16 KiB or more \
    in one body: hyper caps them per body, Portcullis per chunk-size line (4 KiB) and \
    keeps none of them";
/// A documented difference: hyper refuses what Portcullis reads, on purpose and safely.
pub const LAXER_TRAILER_SIZE: &str = "a trailer section of 16,384 bytes or more: \
    hyper's limit is 16,383 bytes, Portcullis's `MAX_TRAILERS_SIZE` 16,384 with the \
    blank line (and in fact up to 16,388: see `known_finding_trailer_section_limit`)";
/// A documented difference: hyper closes where Portcullis keeps the connection, safely.
pub const LAXER_OBS_TEXT_CONNECTION: &str = "HTTP/1.0 request whose `Connection` line \
    says `keep-alive` next to a byte that is not visible ASCII (`keep-alive, \\x80`): \
    hyper skips the whole line (`HeaderValue::to_str` fails) and closes, Portcullis \
    reads the token and keeps the connection";
/// A documented difference where hyper is off the RFC: both read the response, hyper
/// until close, Portcullis as chunked.
pub const FINDING_RESPONSE_EMPTY_CODINGS: &str = "response whose Transfer-Encoding has \
    empty list elements after `chunked` (`chunked,`, an empty line after `chunked`): \
    Portcullis ignores them (RFC 9110 §5.6.1) and decodes chunked, hyper reads only the \
    last element of the last line and reads until close; hyper is the one off the RFC";

/// What one input came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every message Portcullis accepted, hyper read the same, and Portcullis read the
    /// input to its end (or to where the connection would close).
    Agreed,
    /// Portcullis refused a message hyper accepted: the reason.
    Stricter(String),
    /// Both refused (or neither finished) the same message.
    BothRefused,
    /// The input ended inside a message, for both.
    Incomplete,
    /// A documented laxer-but-safe difference.
    Laxer(&'static str),
    /// A known finding.
    Known(&'static str),
    Failure(String),
}

/// Bytes as a pasteable byte string literal.
pub fn show(bytes: &[u8]) -> String {
    format!("{:?}", Bytes::copy_from_slice(bytes))
}

/// Fields for a message, long values cut short.
fn show_fields(fields: &Fields) -> String {
    const LONGEST: usize = 100;
    let shown: Vec<String> = fields
        .iter()
        .map(|(name, value)| match value.get(..LONGEST) {
            Some(start) if value.len() > LONGEST => {
                format!("{name}: {}... ({} bytes)", show(start), value.len())
            }
            _ => format!("{name}: {}", show(value)),
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

fn values<'f>(fields: &'f Fields, name: &'f str) -> impl Iterator<Item = &'f [u8]> + 'f {
    fields
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn map(fields: &Fields) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// hyper's reading of `Transfer-Encoding`: the last element of the last line is
/// `chunked` (a line that is not visible ASCII counts as not chunked).
fn hyper_reads_chunked(fields: &Fields) -> bool {
    let Some(last) = values(fields, "transfer-encoding").last() else {
        return false;
    };
    let Ok(text) = HeaderValue::from_bytes(last)
        .ok()
        .map(|v| v.to_str().map(str::to_owned))
        .unwrap_or(Ok(String::new()))
    else {
        return false;
    };
    text.rsplit(',')
        .next()
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// Portcullis's reading of `Transfer-Encoding`: chunked last, once.
fn portcullis_reads_chunked(fields: &Fields) -> bool {
    matches!(
        rules::transfer_codings(&map(fields)),
        Codings::Chunked | Codings::ChunkedAfterOthers
    )
}

/// A strict decimal, as both sides read one `Content-Length` element.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn forbidden_in_trailers(name: &str) -> bool {
    HeaderName::from_bytes(name.as_bytes()).is_ok_and(|name| rules::is_forbidden_in_trailers(&name))
}

/// Trailers hyper passed on, less the names Portcullis drops from every trailer section.
fn kept_trailers(trailers: &Fields) -> Fields {
    trailers
        .iter()
        .filter(|(name, _)| !forbidden_in_trailers(name))
        .cloned()
        .collect()
}

/// Compares one request field by field, allowing for Portcullis's normalisations:
/// `Expect` removed, `Content-Length` one normalised decimal, `Host` set to an absolute
/// target's authority, names with `_` dropped under [`UnderscoreHeaders::Drop`].
fn same_request(
    p: &Request,
    h: &SeenRequest,
    underscores: UnderscoreHeaders,
) -> Result<(), String> {
    if p.method != h.method {
        return Err(format!("method {:?} vs hyper {:?}", p.method, h.method));
    }
    if p.target != h.target {
        return Err(format!("target {:?} vs hyper {:?}", p.target, h.target));
    }
    if p.version != h.version {
        return Err(format!("version {:?} vs hyper {:?}", p.version, h.version));
    }
    let body = h.body.as_deref().unwrap_or_default();
    if p.body != body {
        return Err(format!("body {} vs hyper {}", show(&p.body), show(body)));
    }
    same_trailers(&p.trailers, &h.trailers)?;
    let mut ours = p.fields.clone();
    let mut theirs = h.fields.clone();
    theirs.retain(|(name, _)| name != "expect");
    if underscores == UnderscoreHeaders::Drop {
        theirs.retain(|(name, _)| !name.contains('_'));
    }
    let our_length: Vec<&[u8]> = values(&ours, "content-length").collect();
    let their_length: Vec<Option<u64>> = values(&theirs, "content-length").map(decimal).collect();
    match our_length.as_slice() {
        [] if their_length.is_empty() => {}
        [length] => {
            let length = decimal(length);
            if length.is_none()
                || their_length.is_empty()
                || their_length.iter().any(|theirs| *theirs != length)
            {
                return Err(format!(
                    "Content-Length {length:?} vs hyper {their_length:?}"
                ));
            }
        }
        _ => {
            return Err(format!(
                "Content-Length {our_length:?} vs hyper {their_length:?}"
            ))
        }
    }
    ours.retain(|(name, _)| name != "content-length");
    theirs.retain(|(name, _)| name != "content-length");
    if let Some(authority) = &p.authority {
        let hosts: Vec<&[u8]> = values(&ours, "host").collect();
        if hosts != [authority.as_bytes()] {
            return Err(format!(
                "Host {hosts:?} is not the target's authority {authority:?}"
            ));
        }
        ours.retain(|(name, _)| name != "host");
        theirs.retain(|(name, _)| name != "host");
    }
    // Each name's values keep their order; the order among names does not count (RFC
    // 9110 §5.3), and `HeaderMap::remove` (for `Expect`, names with `_`) changes it.
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    theirs.sort_by(|a, b| a.0.cmp(&b.0));
    if ours != theirs {
        return Err(format!(
            "fields {} vs hyper {}",
            show_fields(&ours),
            show_fields(&theirs)
        ));
    }
    Ok(())
}

/// A documented limit of hyper's that explains it refusing a body, from its reason.
fn hyper_limit(reason: &str) -> Option<Verdict> {
    if reason.ends_with("chunk extensions over limit") {
        return Some(Verdict::Laxer(LAXER_EXTENSIONS_TOTAL));
    }
    if reason.ends_with("chunk trailers bytes over limit") {
        return Some(Verdict::Laxer(LAXER_TRAILER_SIZE));
    }
    None
}

/// A documented difference that explains hyper not accepting message `at`, which
/// Portcullis accepted.
fn explain_request_refusal(p: &Requests, h: &HyperRequests, at: usize) -> Option<Verdict> {
    let ours = &p.messages[at];
    if let Some(Err(reason)) = h.seen.get(at).map(|seen| &seen.body) {
        if let Some(verdict) = hyper_limit(reason) {
            return Some(verdict);
        }
    }
    if values(&ours.raw_fields, "content-length").any(|value| value.contains(&b',')) {
        return Some(Verdict::Laxer(LAXER_LENGTH_LIST));
    }
    if values(&ours.raw_fields, "transfer-encoding")
        .next()
        .is_some()
        && !hyper_reads_chunked(&ours.raw_fields)
    {
        return Some(Verdict::Laxer(LAXER_EMPTY_CODINGS));
    }
    // hyper closed after the previous message, which Portcullis kept alive.
    let closed_quietly = h.seen.len() == at && h.error.is_none();
    if closed_quietly && at > 0 {
        let previous = &p.messages[at - 1];
        let visible =
            |value: &[u8]| HeaderValue::from_bytes(value).is_ok_and(|v| v.to_str().is_ok());
        if previous.version == Version::HTTP_10
            && previous.keep_alive
            && values(&previous.raw_fields, "connection").any(|value| !visible(value))
        {
            return Some(Verdict::Laxer(LAXER_OBS_TEXT_CONNECTION));
        }
    }
    None
}

/// Judges the requests of one input.
pub fn judge_requests(p: &Requests, h: &HyperRequests, underscores: UnderscoreHeaders) -> Verdict {
    if h.timed_out {
        return Verdict::Failure("hyper's server did not finish in time".to_owned());
    }
    let accepted = h.accepted();
    for (at, (ours, theirs)) in p.messages.iter().zip(&h.seen[..accepted]).enumerate() {
        if let Err(difference) = same_request(ours, theirs, underscores) {
            return Verdict::Failure(format!("request {at} read differently: {difference}"));
        }
    }
    if accepted < p.messages.len() {
        if let Some(verdict) = explain_request_refusal(p, h, accepted) {
            return verdict;
        }
        let why = match h.seen.get(accepted) {
            Some(seen) => format!(
                "its body failed: {}",
                seen.body.as_ref().err().map_or("", String::as_str)
            ),
            None => match &h.error {
                Some(error) => format!("it refused it: {error}"),
                None => "it closed the connection before it".to_owned(),
            },
        };
        return Verdict::Failure(format!(
            "Portcullis accepted request {accepted}, hyper did not ({why})"
        ));
    }
    let hyper_read_more = accepted > p.messages.len();
    match &p.end {
        End::Complete => Verdict::Agreed,
        End::Rejected(reason) if hyper_read_more => Verdict::Stricter(reason.clone()),
        End::Rejected(_) => Verdict::BothRefused,
        End::Incomplete if hyper_read_more => Verdict::Failure(format!(
            "hyper read request {} whole; for Portcullis it had not ended",
            p.messages.len()
        )),
        End::Incomplete => Verdict::Incomplete,
    }
}

/// Whether a response to `method` with `status` has a body to frame at all.
fn framed(method: &Method, status: u16) -> bool {
    *method != Method::HEAD && !(100..200).contains(&status) && status != 204 && status != 304
}

/// A known finding that explains a difference over the response head `head`.
fn explain_response(
    method: &Method,
    status: Option<u16>,
    head: Option<&(Version, Fields)>,
) -> Option<Verdict> {
    let (version, fields) = head?;
    if status.is_some_and(|status| !framed(method, status))
        || values(fields, "transfer-encoding").next().is_none()
    {
        return None;
    }
    // Portcullis refuses HTTP/1.0 with Transfer-Encoding and `chunked` twice, as
    // stricter; the one documented difference is hyper reading `chunked,` until close.
    if *version == Version::HTTP_10
        || hyper_reads_chunked(fields)
        || !portcullis_reads_chunked(fields)
    {
        return None;
    }
    Some(Verdict::Known(FINDING_RESPONSE_EMPTY_CODINGS))
}

/// Portcullis's trailers against hyper's, those Portcullis drops on purpose left out.
fn same_trailers(ours: &Fields, hyper_side: &Fields) -> Result<(), String> {
    let kept = kept_trailers(hyper_side);
    if *ours != kept {
        return Err(format!(
            "trailers {} vs hyper {}",
            show_fields(ours),
            show_fields(&kept)
        ));
    }
    Ok(())
}

fn same_response(p: &Response, h: &SeenResponse) -> Result<(), String> {
    if p.status != h.status {
        return Err(format!("status {} vs hyper {}", p.status, h.status));
    }
    if p.version != h.version {
        return Err(format!("version {:?} vs hyper {:?}", p.version, h.version));
    }
    if p.fields != h.fields {
        return Err(format!(
            "fields {} vs hyper {}",
            show_fields(&p.fields),
            show_fields(&h.fields)
        ));
    }
    let body = h.body.as_deref().unwrap_or_default();
    if p.body != body {
        return Err(format!(
            "body {} ({:?}) vs hyper {}",
            show(&p.body),
            p.framing,
            show(body)
        ));
    }
    same_trailers(&p.trailers, &h.trailers)?;
    Ok(())
}

/// Judges the response of one input, read for a `method` request.
pub fn judge_response(method: &Method, p: &ResponseOutcome, h: &HyperResponse) -> Verdict {
    let theirs = match h {
        HyperResponse::TimedOut => {
            return Verdict::Failure("hyper's client did not finish in time".to_owned())
        }
        HyperResponse::Read(seen) if seen.body.is_ok() => Some(seen),
        HyperResponse::Read(_) | HyperResponse::Refused(_) => None,
    };
    let status = p.response.as_ref().map(|r| r.status);
    match (&p.response, theirs) {
        (Some(ours), Some(theirs)) => match same_response(ours, theirs) {
            Ok(()) => Verdict::Agreed,
            Err(difference) => explain_response(method, status, p.head.as_ref()).unwrap_or(
                Verdict::Failure(format!("response read differently: {difference}")),
            ),
        },
        (Some(_), None) => {
            let why = match h {
                HyperResponse::Read(seen) => seen.body.as_ref().err().cloned().unwrap_or_default(),
                HyperResponse::Refused(error) => error.clone(),
                HyperResponse::TimedOut => String::new(),
            };
            hyper_limit(&why)
                .or_else(|| explain_response(method, status, p.head.as_ref()))
                .unwrap_or(Verdict::Failure(format!(
                    "Portcullis accepted the response, hyper did not ({why})"
                )))
        }
        (None, Some(theirs)) => {
            if let Some(known) = explain_response(method, Some(theirs.status), p.head.as_ref()) {
                return known;
            }
            match &p.end {
                End::Rejected(reason) => Verdict::Stricter(reason.clone()),
                End::Incomplete | End::Complete => Verdict::Failure(
                    "hyper read the response whole; for Portcullis it had not ended".to_owned(),
                ),
            }
        }
        (None, None) => match p.end {
            End::Incomplete => Verdict::Incomplete,
            _ => Verdict::BothRefused,
        },
    }
}
