//! Line numbers for YAML nodes, so compile errors can name `file:line`.
//!
//! serde_yaml_ng exposes no spans once a document is deserialized, so a second, event-level
//! pass (yaml-rust2's marked parser) records the line of every mapping key and sequence item
//! under a dotted path such as `spec.http[0].route[1].weight`.
//!
//! Depends on: yaml-rust2.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Lines of one YAML document, keyed by node path.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DocLines {
    /// Line (1-based) where the document's content starts.
    pub(crate) start: u32,
    paths: HashMap<String, u32>,
}

impl DocLines {
    /// Line of `path`, or of its longest recorded ancestor, or of the document start.
    pub(crate) fn line_of(&self, path: &str) -> u32 {
        let mut p = path;
        loop {
            if let Some(l) = self.paths.get(p) {
                return *l;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.start,
            }
        }
    }
}

/// Index every document of a YAML stream. Returns `None` when the text is not valid YAML
/// (the serde pass reports that error with its own location).
pub(crate) fn index(text: &str) -> Option<Vec<DocLines>> {
    let mut rx = Indexer::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut rx, true).ok()?;
    Some(rx.docs)
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, idx: usize },
}

#[derive(Default)]
struct Indexer {
    docs: Vec<DocLines>,
    cur: Option<DocLines>,
    stack: Vec<Frame>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Indexer {
    fn record(&mut self, path: String, line: u32) {
        if let Some(doc) = self.cur.as_mut() {
            if doc.start == 0 {
                doc.start = line;
            }
            doc.paths.entry(path).or_insert(line);
        }
    }

    /// Handles a node in value position; returns the path of that node when it has one.
    fn value(&mut self, line: u32, is_scalar: bool, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    // A key: remember it for the value that follows.
                    if is_scalar {
                        let k = scalar.unwrap_or_default().to_owned();
                        let p = join(path, &k);
                        *key = Some(k);
                        self.record(p, line);
                    }
                    None
                }
            },
            Some(Frame::Seq { path, idx }) => {
                let p = format!("{path}[{idx}]");
                *idx += 1;
                self.record(p.clone(), line);
                Some(p)
            }
            None => Some(String::new()),
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = u32::try_from(mark.line()).unwrap_or(u32::MAX);
        match ev {
            Event::DocumentStart => {
                self.stack.clear();
                self.cur = Some(DocLines::default());
            }
            Event::DocumentEnd => {
                if let Some(doc) = self.cur.take() {
                    self.docs.push(doc);
                }
            }
            Event::Scalar(s, ..) => {
                self.value(line, true, Some(&s));
            }
            Event::Alias(_) => {
                self.value(line, true, None);
            }
            Event::MappingStart(..) => {
                let path = self.value(line, false, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.value(line, false, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, idx: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_and_items_per_document() {
        let text =
            "a: 1\nspec:\n  http:\n  - route:\n    - weight: 5\n    - weight: 7\n---\n\nkind: X\n";
        let docs = index(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_of("spec.http[0].route[1].weight"), 6);
        assert_eq!(docs[0].line_of("spec.http[0].route[0].weight"), 5);
        assert_eq!(docs[0].line_of("spec.http[0].route[0].missing"), 5);
        assert_eq!(docs[0].line_of("nothing"), 1);
        assert_eq!(docs[1].line_of("kind"), 9);
    }

    #[test]
    fn flow_style_is_indexed_too() {
        let docs = index("spec: {hosts: [a, b], http: [{name: x}]}\n").unwrap();
        assert_eq!(docs[0].line_of("spec.http[0].name"), 1);
    }

    #[test]
    fn invalid_yaml_gives_none() {
        assert!(index("a: [1, 2\n").is_none());
    }
}
