//! A response on its way to the client as bytes: the head and chunk framing the
//! connection encodes, each body frame's data as it came (never copied), and the CRLF
//! that ends a chunk, written together with vectored writes; chunked trailers; a body
//! that does not match its `Content-Length` is an error.

use std::io;

use bytes::{Buf, Bytes};
use http_body::Frame;

use super::WriteFailure;
use crate::http1::fields::chunk_size_line;
use crate::http1::response::{self, ResponseFraming};

/// A response on its way out: encoded bytes (head, chunk framing), then a body frame's
/// data as it came, then what follows the data (the CRLF ending a chunk).
pub struct ResponseWriter {
    framing: ResponseFraming,
    /// Body bytes the `Content-Length` still allows.
    remaining: u64,
    pub bytes: Vec<u8>,
    sent: usize,
    pub data: Bytes,
    suffix: &'static [u8],
    /// Every frame has been taken from the body and encoded.
    pub finished: bool,
    /// The last write (or flush) could not go on: the client is not reading.
    pub blocked: bool,
    /// Bytes went out since the connection last looked.
    pub progressed: bool,
}

impl ResponseWriter {
    pub fn new(framing: ResponseFraming) -> Self {
        ResponseWriter {
            framing,
            remaining: match framing {
                ResponseFraming::Length(length) => length,
                _ => 0,
            },
            bytes: Vec::new(),
            sent: 0,
            data: Bytes::new(),
            suffix: &[],
            finished: framing == ResponseFraming::Empty,
            blocked: false,
            progressed: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent == self.bytes.len() && self.data.is_empty() && self.suffix.is_empty()
    }

    /// Once no data is pending, what followed it joins the encoded bytes, so that the
    /// next frame's framing can be added after it (while data is pending, it must stay
    /// behind it: nothing moves).
    pub fn suffix_into_bytes(&mut self) {
        if !self.data.is_empty() {
            return;
        }
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
        }
        self.bytes.extend_from_slice(self.suffix);
        self.suffix = &[];
    }

    pub fn push_frame(&mut self, frame: Frame<Bytes>) -> Result<(), WriteFailure> {
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                match self.framing {
                    ResponseFraming::Length(_) => {
                        let len = data.len() as u64;
                        if len > self.remaining {
                            return Err(WriteFailure::Length);
                        }
                        self.remaining -= len;
                    }
                    ResponseFraming::Chunked => {
                        let mut line = [0; 18];
                        let line = chunk_size_line(data.len(), &mut line);
                        self.bytes.extend_from_slice(line);
                        self.suffix = b"\r\n";
                    }
                    ResponseFraming::UntilClose => {}
                    ResponseFraming::Empty => return Ok(()),
                }
                self.data = data;
            }
            Err(frame) => {
                if let (Ok(trailers), ResponseFraming::Chunked) =
                    (frame.into_trailers(), self.framing)
                {
                    response::encode_last_chunk(&mut self.bytes, Some(&trailers));
                    self.finished = true;
                }
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), WriteFailure> {
        match self.framing {
            // The last data is still pending (the body said it ended with it): the last
            // chunk goes after it, with the CRLF that closes that data, in the same write.
            ResponseFraming::Chunked if !self.data.is_empty() => {
                self.suffix = b"\r\n0\r\n\r\n";
            }
            ResponseFraming::Chunked => response::encode_last_chunk(&mut self.bytes, None),
            ResponseFraming::Length(_) if self.remaining > 0 => return Err(WriteFailure::Length),
            _ => {}
        }
        self.finished = true;
        Ok(())
    }

    pub fn slices(&self) -> [io::IoSlice<'_>; 3] {
        [
            io::IoSlice::new(&self.bytes[self.sent..]),
            io::IoSlice::new(&self.data),
            io::IoSlice::new(self.suffix),
        ]
    }

    pub fn advance(&mut self, mut written: usize) {
        let from_bytes = written.min(self.bytes.len() - self.sent);
        self.sent += from_bytes;
        written -= from_bytes;
        let from_data = written.min(self.data.len());
        self.data.advance(from_data);
        written -= from_data;
        self.suffix = &self.suffix[written.min(self.suffix.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the writer would send, as if every write took all it was given.
    fn drain(writer: &mut ResponseWriter, out: &mut Vec<u8>) {
        let slices = writer.slices();
        let total: usize = slices.iter().map(|s| s.len()).sum();
        for slice in &slices {
            out.extend_from_slice(slice);
        }
        writer.advance(total);
        assert!(writer.is_empty());
    }

    fn data(bytes: &'static [u8]) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(bytes))
    }

    #[test]
    fn chunked_bodies_are_framed_with_the_crlf_merged_into_what_follows() {
        let mut writer = ResponseWriter::new(ResponseFraming::Chunked);
        writer.bytes.extend_from_slice(b"HEAD\r\n\r\n");
        let mut out = Vec::new();
        writer.suffix_into_bytes();
        writer.push_frame(data(b"hello")).expect("frame");
        drain(&mut writer, &mut out);
        writer.suffix_into_bytes();
        writer.push_frame(data(b"!")).expect("frame");
        writer.suffix_into_bytes();
        // `!` is still pending: nothing merges until it is out.
        drain(&mut writer, &mut out);
        writer.suffix_into_bytes();
        writer.finish().expect("end");
        drain(&mut writer, &mut out);
        assert_eq!(out, b"HEAD\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n");
        assert!(writer.finished);
    }

    #[test]
    fn a_body_that_ends_with_its_data_is_finished_in_one_write() {
        let mut writer = ResponseWriter::new(ResponseFraming::Chunked);
        writer.bytes.extend_from_slice(b"HEAD\r\n\r\n");
        writer.suffix_into_bytes();
        writer.push_frame(data(b"hello")).expect("frame");
        writer.finish().expect("end");
        let mut out = Vec::new();
        drain(&mut writer, &mut out);
        assert_eq!(out, b"HEAD\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert!(writer.finished);
    }

    #[test]
    fn trailers_end_a_chunked_body() {
        let mut writer = ResponseWriter::new(ResponseFraming::Chunked);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        writer.push_frame(data(b"ab")).expect("frame");
        let mut out = Vec::new();
        drain(&mut writer, &mut out);
        writer.suffix_into_bytes();
        writer
            .push_frame(Frame::trailers(trailers))
            .expect("trailers");
        drain(&mut writer, &mut out);
        assert_eq!(out, b"2\r\nab\r\n0\r\ngrpc-status: 0\r\n\r\n");
        assert!(writer.finished);
    }

    #[test]
    fn a_body_must_match_its_length() {
        let mut short = ResponseWriter::new(ResponseFraming::Length(5));
        short.push_frame(data(b"abc")).expect("within the length");
        assert!(matches!(short.finish(), Err(WriteFailure::Length)));
        let mut long = ResponseWriter::new(ResponseFraming::Length(2));
        assert!(matches!(
            long.push_frame(data(b"abc")),
            Err(WriteFailure::Length)
        ));
        let mut exact = ResponseWriter::new(ResponseFraming::Length(3));
        exact.push_frame(data(b"abc")).expect("frame");
        let mut out = Vec::new();
        drain(&mut exact, &mut out);
        exact.finish().expect("complete");
        assert_eq!(out, b"abc");
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut writer = ResponseWriter::new(ResponseFraming::Chunked);
        writer.bytes.extend_from_slice(b"H\r\n");
        writer.push_frame(data(b"xyz")).expect("frame");
        let mut out = Vec::new();
        // One byte at a time, across the three parts.
        while !writer.is_empty() {
            let slices = writer.slices();
            let first = slices
                .iter()
                .find(|s| !s.is_empty())
                .expect("something left");
            out.push(first[0]);
            writer.advance(1);
        }
        assert_eq!(out, b"H\r\n3\r\nxyz\r\n");
    }
}
