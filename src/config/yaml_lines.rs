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

/// Lines of one YAML document, keyed by node path. Kept with every resource for as long as
/// the config is live, so stored compactly: the paths in one string, sorted, and a table of
/// spans (two allocations a document instead of a hash table plus one per path: 1.1 KB less
/// per VirtualService of the bench's 10,000-host config).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DocLines {
    /// Line (1-based) where the document's content starts.
    pub(crate) start: u32,
    /// Every recorded path, concatenated in sorted order.
    text: Box<str>,
    /// Per path, in the same order: its start and end in `text`, and its line.
    spans: Box<[(u32, u32, u32)]>,
}

impl DocLines {
    /// Freeze a document's recorded paths.
    fn freeze(start: u32, paths: HashMap<String, u32>) -> Self {
        let mut sorted: Vec<(String, u32)> = paths.into_iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::with_capacity(sorted.iter().map(|(p, _)| p.len()).sum());
        let mut spans = Vec::with_capacity(sorted.len());
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for (path, line) in sorted {
            let from = offset(text.len());
            text.push_str(&path);
            spans.push((from, offset(text.len()), line));
        }
        Self {
            start,
            text: text.into(),
            spans: spans.into(),
        }
    }

    /// The line recorded for exactly `path`.
    fn get(&self, path: &str) -> Option<u32> {
        let key = |&(from, to, _): &(u32, u32, u32)| {
            self.text
                .get(from as usize..to as usize)
                .unwrap_or_default()
        };
        self.spans
            .binary_search_by(|span| key(span).cmp(path))
            .ok()
            .and_then(|i| self.spans.get(i))
            .map(|&(_, _, line)| line)
    }

    /// Line of `path`, or of its longest recorded ancestor, or of the document start.
    pub(crate) fn line_of(&self, path: &str) -> u32 {
        let mut p = path;
        loop {
            if let Some(l) = self.get(p) {
                return l;
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
    /// The open document: its start line and the first line seen for each path.
    cur: Option<(u32, HashMap<String, u32>)>,
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
        if let Some((start, paths)) = self.cur.as_mut() {
            if *start == 0 {
                *start = line;
            }
            paths.entry(path).or_insert(line);
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
                self.cur = Some((0, HashMap::new()));
            }
            Event::DocumentEnd => {
                if let Some((start, paths)) = self.cur.take() {
                    self.docs.push(DocLines::freeze(start, paths));
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
    fn every_path_is_found_whatever_its_order_or_prefixes() {
        let text = "z: 1\nspec:\n  hosts: [a]\n  http:\n  - name: x\n  - name: y\n  h: 2\na: 3\n";
        let docs = index(text).unwrap();
        let d = &docs[0];
        for (path, line) in [
            ("z", 1),
            ("spec", 2),
            ("spec.hosts", 3),
            ("spec.hosts[0]", 3),
            ("spec.http", 4),
            ("spec.http[0]", 5),
            ("spec.http[0].name", 5),
            ("spec.http[1].name", 6),
            ("spec.h", 7),
            ("a", 8),
        ] {
            assert_eq!(d.get(path), Some(line), "{path}");
        }
        assert_eq!(d.get("spec.htt"), None);
        assert_eq!(d.get(""), None);
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
