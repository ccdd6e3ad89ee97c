//! Where each key of the YAML file sits: a map from key paths such as
//! `routes[2].upstream` to line and column, built from yaml-rust2's marked events.
//!
//! serde_yaml reports locations only for the errors it finds itself; the checks that
//! compare values across the file (an unknown upstream, a duplicate name) use this index
//! to point at the offending value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Key path → location of the value at that path.
#[derive(Debug, Default)]
pub struct LocationIndex {
    positions: HashMap<String, Location>,
}

impl LocationIndex {
    /// Indexes `source`. A file that does not parse yields an empty index: serde_yaml
    /// reports the syntax error itself, with its location.
    pub fn build(source: &str) -> Self {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            positions: builder.positions,
        }
    }

    /// The location of `path`, or of its nearest ancestor that exists (a missing key
    /// is reported where its parent mapping starts).
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(location) = self.positions.get(path) {
                return Some(*location);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    positions: HashMap<String, Location>,
}

impl IndexBuilder {
    /// The path of the value that the next node is, or `None` when it is a mapping key.
    fn next_value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Mapping { key: None, .. }) => None,
            Some(Frame::Mapping {
                path,
                key: Some(key),
            }) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Some(Frame::Sequence { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions.entry(path.to_owned()).or_insert(Location {
            line: mark.line(),
            column: mark.col() + 1,
        });
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => match self.next_value_path() {
                None => {
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some(text);
                    }
                }
                Some(path) => {
                    self.record(&path, mark);
                    self.value_done();
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_value_path() {
                    self.record(&path, mark);
                }
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex (non-scalar) key gets a placeholder path; nothing refers to it.
                let path = self.next_value_path().unwrap_or_else(|| "?".to_owned());
                self.record(&path, mark);
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping { path, key: None }
                    } else {
                        Frame::Sequence { path, index: 0 }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_values_are_located() {
        let source = "upstreams:\n  users:\n    endpoints: [\"http://a\", \"http://b\"]\nroutes:\n  - name: r\n    match: { path_prefix: /api }\n    upstream: users\n";
        let index = LocationIndex::build(source);
        assert_eq!(
            index.locate("upstreams.users.endpoints[1]"),
            Some(Location {
                line: 3,
                column: 29
            })
        );
        assert_eq!(
            index.locate("routes[0].match.path_prefix"),
            Some(Location {
                line: 6,
                column: 27
            })
        );
        assert_eq!(
            index.locate("routes[0].upstream"),
            Some(Location {
                line: 7,
                column: 15
            })
        );
        // A missing key falls back to its parent.
        assert_eq!(
            index.locate("routes[0].match.methods"),
            Some(Location {
                line: 6,
                column: 12
            })
        );
    }
}
