//! The hand-written hostile inputs of the differential test, requests and responses:
//! each a way parsers in front of or behind a proxy have been made to disagree. A case
//! marked with a note is a documented difference (a known finding, or Portcullis
//! laxer-but-safe); the test checks that it still reads as that difference, so fixing a
//! finding means removing its mark here.

use crate::verdict::{
    FINDING_RESPONSE_EMPTY_CODINGS, LAXER_EMPTY_CODINGS, LAXER_EXTENSIONS_TOTAL, LAXER_LENGTH_LIST,
    LAXER_OBS_TEXT_CONNECTION, LAXER_TRAILER_SIZE,
};

/// One case: its bytes, and the documented difference it shows, if any.
pub type Case = (&'static [u8], Option<&'static str>);

/// A request body after a chunked head.
macro_rules! chunked {
    ($body:expr) => {
        concat!(
            "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            $body,
            "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        .as_bytes()
    };
}

/// A head and body followed by a pipelined request.
macro_rules! then_get {
    ($message:expr) => {
        concat!($message, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()
    };
}

pub const REQUESTS: &[Case] = &[
    // Framing given twice.
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"), Some(LAXER_LENGTH_LIST)),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello"), Some(LAXER_LENGTH_LIST)),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello"), Some(LAXER_LENGTH_LIST)),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \t\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n"), None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nabc", None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\n Content-Length: 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"), None),
    // Transfer codings.
    (chunked!("3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), Some(LAXER_EMPTY_CODINGS)),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n3\r\nabc\r\n0\r\n\r\n"), Some(LAXER_EMPTY_CODINGS)),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x00\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    // Chunk sizes.
    (chunked!("Z\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("0x3\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("+3\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("-3\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!(" 3\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3 \r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3\t\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("03\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("0000000000000003\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("00000000000000003\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("fffffffffffffffff\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("ffffffffffffffff\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n00\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0000000000000000\r\n\r\n"), None),
    (chunked!("A\r\n0123456789\r\n0\r\n\r\n"), None),
    (chunked!("a\r\n0123456789\r\n0\r\n\r\n"), None),
    (chunked!("\r\nabc\r\n0\r\n\r\n"), None),
    // The CRLF after chunk data; bare LF and bare CR in the framing.
    (chunked!("3\r\nabcX\r\n0\r\n\r\n"), None),
    (chunked!("3\r\nabc0\r\n\r\n"), None),
    (chunked!("3\r\nabc\n0\r\n\r\n"), None),
    (chunked!("3\r\nabc\r0\r\n\r\n"), None),
    (chunked!("3\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3\rabc\r\n0\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\n\n"), None),
    (chunked!("3\r\nabc\r\n0\n\n"), None),
    (chunked!("3\r\nabc\r\r\n0\r\n\r\n"), None),
    (chunked!("3\r\r\nabc\r\n0\r\n\r\n"), None),
    // Chunk extensions.
    (chunked!("3;a\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=b;c;d=e\r\nabc\r\n0;last\r\n\r\n"), None),
    (chunked!("3;a=\"b c\"\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\"b\\\"c\"\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\"b\\\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\"b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\"\x7f\"\r\nabc\r\n0\r\n\r\n"), None),
    (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"\x80\"\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (chunked!("3;\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;=b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a=\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3 ;a\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3; a\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a =b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a= b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a b\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a\x00\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a\x01\r\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a\nabc\r\n0\r\n\r\n"), None),
    (chunked!("3;a\rabc\r\n0\r\n\r\n"), None),
    (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x80\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", None),
    // Trailers.
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\r\nx-u:2\r\nx-t: 3\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t:  padded \t\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t:\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nno colon\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nnocolon\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\n: no name\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t : 1\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\r\n folded\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\r\n\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\rx\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: a\x00b\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: a\x7fb\r\n\r\n"), None),
    (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: a\x80b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (chunked!("3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nx-ok: 1\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\nhello"), None),
    (chunked!("3\r\nabc\r\n0\r\nx-t: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nGET /smuggled-as-trailer HTTP/1.1\r\n\r\n"), None),
    (chunked!("3\r\nabc\r\n0\r\nx_t: 1\r\n\r\n"), None),
    // Obs-fold, bare CR and LF, controls and spaces in heads.
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX-F: 1\r\n 2\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX-F: 1\r\n\t2\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n 5\r\n\r\nhello"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\nHost: a\n\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: 1\rY: 2\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\rHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"), None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x80\xffb\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX\t: 1\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: 1\r\n\r\n"), None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX\x80Y: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\nX-Under: 2\r\n\r\n"), None),
    (then_get!("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    // Request lines.
    (then_get!("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), None),
    (then_get!("GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / http/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET /\r\nHost: a\r\n\r\n"), None),
    (then_get!("get / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("CUSTOM-METHOD /x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET /a%00b?c=%ff#frag HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (then_get!("GET a HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET ?x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    // Targets, Host.
    (then_get!("GET http://example.com/x HTTP/1.1\r\nHost: other\r\n\r\n"), None),
    (then_get!("GET http://example.com:8080/x?y HTTP/1.1\r\n\r\n"), None),
    (then_get!("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"), None),
    (then_get!("GET https://example.com/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), None),
    (then_get!("GET http://user:pw@example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"), None),
    (then_get!("GET http://user@example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"), None),
    (then_get!("GET http://@example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"), None),
    (then_get!("GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n"), None),
    (then_get!("GET //example.com/x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET ftp://example.com/x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), None),
    (then_get!("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost:\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: \r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.0\r\n\r\n"), None),
    (then_get!("GET / HTTP/1.0\r\nHost:\r\nConnection: keep-alive\r\n\r\n"), None),
    // Expect.
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-CONTINUE\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect:\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"), None),
    (then_get!("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"), None),
    (then_get!("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), None),
    // Connection, pipelining, upgrades.
    (then_get!("GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.1\r\nHost: a\r\nConnection: ,close,\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"), None),
    // Fixed finding: `close` wins over a later `keep-alive` on HTTP/1.0.
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n"), None),
    (then_get!("GET /1 HTTP/1.0\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"), None),
    (b"GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive, \x80\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", Some(LAXER_OBS_TEXT_CONNECTION)),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close, \x80\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (then_get!("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), None),
    (then_get!("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"), None),
    (then_get!("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"), None),
    (then_get!("GET /ws HTTP/1.0\r\nHost: a\r\nConnection: upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n"), None),
    (then_get!("POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc"), None),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\nGET /5 HTTP/1.1\r\nHost: a\r\n\r\nGET /6 HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nPOST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\ny", None),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab", None),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHo", None),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\n", None),
    (b"GET /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcde", None),
    (b"", None),
    (b"\r\n", None),
    (b"GET", None),
];

pub const RESPONSES: &[Case] = &[
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nContent_Length: 5\r\n\r\nhello", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\nContent-Length: 9\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    // Fixed finding: `chunked` twice is refused (it was read until close).
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    // Documented difference: empty elements after `chunked`; hyper reads until close.
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Some(FINDING_RESPONSE_EMPTY_CODINGS)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n5\r\nhello\r\n0\r\n\r\n", Some(FINDING_RESPONSE_EMPTY_CODINGS)),
    // Fixed finding: HTTP/1.0 with Transfer-Encoding is refused, as hyper does.
    (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\n\r\nclose-delimited", None),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited", None),
    (b"HTTP/1.1 200 OK\r\n\r\n", None),
    (b"HTTP/1.0 200 OK\r\n\r\nclose-delimited", None),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", None),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc", None),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc", None),
    (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", None),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 100 Continue\r\n\r\n", None),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", None),
    (b"HTTP/1.1 199 Whatever\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 20 Short\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 2000 Long\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK \x80\xff\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: 1\r\n folded\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX : 1\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\x00b\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\rb\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon\r\n\r\nok", None),
    (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok", None),
    (b"SSH-2.0-OpenSSH_9.0\r\n", None),
    (b"", None),
    (b"HTTP/1.1 200 OK\r\nContent-Le", None),
];

/// A head, then `fill` bytes of `byte` in its last field's value, then the end.
fn long_head(start: &[u8], byte: u8, fill: usize, end: &[u8]) -> Vec<u8> {
    let mut bytes = start.to_vec();
    bytes.extend(std::iter::repeat_n(byte, fill));
    bytes.extend_from_slice(end);
    bytes
}

/// `count` field lines `x-N: v`.
fn many_fields(count: usize) -> String {
    (0..count).map(|n| format!("x-{n}: v\r\n")).collect()
}

/// A trailer section of exactly `size` bytes, its blank line included.
pub fn trailer_section(size: usize) -> Vec<u8> {
    let mut section = b"x-t: ".to_vec();
    section.extend(std::iter::repeat_n(b'v', size - section.len() - 4));
    section.extend_from_slice(b"\r\n\r\n");
    section
}

/// A chunked body of one-byte chunks whose extensions add up to about `total` bytes.
fn extensions_totalling(total: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut left = total;
    while left > 0 {
        let len = left.min(4000);
        body.extend_from_slice(b"1;");
        body.extend(std::iter::repeat_n(b'e', len - 1));
        body.extend_from_slice(b"\r\nx\r\n");
        left -= len;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// A generated case: its bytes, and the documented difference it shows, if any.
pub type Built = (Vec<u8>, Option<&'static str>);

/// A trailer section of exactly 16,384 bytes is over hyper's limit, within Portcullis's.
fn trailer_note(size: usize) -> Option<&'static str> {
    (size == 16_384).then_some(LAXER_TRAILER_SIZE)
}

/// Requests around the codec's limits (64 KiB heads, 100 fields, 4 KiB chunk-size
/// lines, trailer sections of 16 KiB and 100 fields) and hyper's (16 KiB of chunk
/// extensions in a body), each followed by a pipelined request.
pub fn boundary_requests() -> Vec<Built> {
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    const CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut out = Vec::new();
    let start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ";
    for size in [65_534, 65_535, 65_536, 65_537, 65_538] {
        let mut end = b"\r\n\r\n".to_vec();
        end.extend_from_slice(NEXT);
        out.push((long_head(start, b'v', size - start.len() - 4, &end), None));
    }
    let mut end = b" HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    end.extend_from_slice(NEXT);
    for size in [65_534, 65_536, 65_537] {
        let fill = size - 5 - end.len() + NEXT.len();
        out.push((long_head(b"GET /", b'p', fill, &end), None));
    }
    for count in [99, 100, 101] {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            many_fields(count - 1)
        );
        out.push(([head.as_bytes(), NEXT].concat(), None));
    }
    for len in [4094, 4095, 4096, 4097] {
        let mut body = CHUNKED.to_vec();
        body.extend_from_slice(b"3;");
        body.extend(std::iter::repeat_n(b'e', len - 2));
        body.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        out.push(([&body, NEXT].concat(), None));
    }
    out.push((
        [CHUNKED, &extensions_totalling(16_000), NEXT].concat(),
        None,
    ));
    let many = [CHUNKED, &extensions_totalling(20_000), NEXT].concat();
    out.push((many, Some(LAXER_EXTENSIONS_TOTAL)));
    for size in [16_381, 16_382, 16_383, 16_384, 16_385, 16_386] {
        let body = [CHUNKED, b"3\r\nabc\r\n0\r\n", &trailer_section(size), NEXT].concat();
        out.push((body, trailer_note(size)));
    }
    for count in [100, 101] {
        let trailers = format!("0\r\n{}\r\n", many_fields(count));
        out.push((
            [CHUNKED, b"3\r\nabc\r\n", trailers.as_bytes(), NEXT].concat(),
            None,
        ));
    }
    out
}

/// Responses around the same limits.
pub fn boundary_responses() -> Vec<Built> {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut out = Vec::new();
    let start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Long: ";
    for size in [65_535, 65_536, 65_537, 70_000] {
        // Over 64 KiB, the head is refused however it arrives.
        out.push((
            long_head(start, b'v', size - start.len() - 4, b"\r\n\r\nok"),
            None,
        ));
    }
    for count in [100, 101] {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{}\r\nok",
            many_fields(count - 1)
        );
        out.push((head.into_bytes(), None));
    }
    out.push(([CHUNKED, &extensions_totalling(16_000)].concat(), None));
    let many = [CHUNKED, &extensions_totalling(20_000)].concat();
    out.push((many, Some(LAXER_EXTENSIONS_TOTAL)));
    for size in [16_382, 16_383, 16_384, 16_385] {
        let body = [CHUNKED, b"3\r\nabc\r\n0\r\n", &trailer_section(size)].concat();
        out.push((body, trailer_note(size)));
    }
    for count in [100, 101] {
        let trailers = format!("0\r\n{}\r\n", many_fields(count));
        out.push((
            [CHUNKED, b"3\r\nabc\r\n", trailers.as_bytes()].concat(),
            None,
        ));
    }
    out
}
