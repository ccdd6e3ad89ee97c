//! Writing one JSON object field by field straight into a line buffer: keys are ours,
//! strings are escaped by serde_json (client values such as paths and user agents can
//! hold quotes, control characters or bytes that are not UTF-8, which become U+FFFD).

use std::io::Write as _;
use std::time::Duration;

/// A line being written: `{` first, then `,"key":value` for every field but the first.
pub struct Fields<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Fields<'a> {
    /// Goes on writing fields into `buf`, which already holds `{` and a field at least.
    pub fn continuing(buf: &'a mut Vec<u8>) -> Self {
        Fields { buf }
    }

    fn key(&mut self, key: &str) {
        if self.buf.is_empty() {
            self.buf.push(b'{');
        } else {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.buf, value);
    }

    /// A value whose text needs no escaping (an address, a timestamp), written
    /// without an intermediate string.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.buf, "\"{value}\"");
    }

    /// A value that may not be UTF-8 (a header field's).
    pub fn bytes(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        bytes(self.buf, value);
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(key, value),
            None => self.null(key),
        }
    }

    pub fn null(&mut self, key: &str) {
        self.key(key);
        self.buf.extend_from_slice(b"null");
    }

    pub fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// Milliseconds with microseconds: `12.345`.
    pub fn millis(&mut self, key: &str, value: Duration) {
        self.key(key);
        let micros = value.as_micros();
        let _ = write!(self.buf, "{}.{:03}", micros / 1000, micros % 1000);
    }

    pub fn opt_millis(&mut self, key: &str, value: Option<Duration>) {
        match value {
            Some(value) => self.millis(key, value),
            None => self.null(key),
        }
    }

    /// A nested object: `"key":{` then the caller's members, then [`Fields::close`].
    pub fn open_object(&mut self, key: &str) {
        self.key(key);
        self.buf.push(b'{');
    }

    /// A member of the object opened last; `first` for the first one.
    pub fn member(&mut self, first: bool, name: &str) {
        if !first {
            self.buf.push(b',');
        }
        string(self.buf, name);
        self.buf.push(b':');
    }

    pub fn member_bytes(&mut self, value: &[u8]) {
        bytes(self.buf, value);
    }

    pub fn member_str(&mut self, value: &str) {
        string(self.buf, value);
    }

    pub fn member_null(&mut self) {
        self.buf.extend_from_slice(b"null");
    }

    pub fn close(&mut self) {
        self.buf.push(b'}');
    }

    /// Ends the line: `}` and a newline.
    pub fn end(self) {
        self.buf.extend_from_slice(b"}\n");
    }
}

fn string(buf: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
}

fn bytes(buf: &mut Vec<u8>, value: &[u8]) {
    string(buf, &String::from_utf8_lossy(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_stay_valid_json() {
        let mut buf = Vec::new();
        let mut fields = Fields::continuing(&mut buf);
        fields.str("path", "/a\"b\\c\n\u{0}\u{1b}[31m\u{2028}");
        fields.bytes("ua", b"curl\xff\xfe\"}{");
        fields.millis("d", Duration::from_micros(12_345));
        fields.open_object("headers");
        fields.member(true, "x-a");
        fields.member_bytes(b"1");
        fields.member(false, "x-b");
        fields.member_null();
        fields.close();
        fields.end();
        assert_eq!(buf.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(value["path"], "/a\"b\\c\n\u{0}\u{1b}[31m\u{2028}");
        assert_eq!(value["ua"], "curl\u{fffd}\u{fffd}\"}{");
        assert_eq!(value["d"], 12.345);
        assert_eq!(value["headers"]["x-a"], "1");
        assert!(value["headers"]["x-b"].is_null());
    }
}
