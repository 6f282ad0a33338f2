//! Gateway selection by this pod's own labels, as Istio does: a Gateway applies to this
//! gateway when every label of its `selector` is among the pod's labels. The labels come from
//! the downward API file (`--pod-labels-file`, one `key="value"` per line, the value quoted
//! like Go's `strconv.Quote`).
//!
//! The labels are handed to the compiler (`CompileOptions::workload_labels`), which serves
//! the Gateways they select; every Gateway stays in the `RawSet`, so VirtualServices bound to
//! one that is not selected are still valid.
//!
//! Depends on: std, `super::error`.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::SourceError;

/// This pod's labels from the downward API file at `path`; `None` when it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<BTreeMap<String, String>>, SourceError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SourceError::LabelsRead {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|(line, message)| SourceError::LabelsFormat {
            path: path.to_owned(),
            line,
            message,
        })
}

/// Parse `key="value"` lines; blank lines are skipped. Errors carry the 1-based line.
pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| (i + 1, m.to_owned());
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("expected key=\"value\""))?;
        if key.is_empty() {
            return Err(err("empty label key"));
        }
        let value = unquote(value).map_err(|m| err(&m))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// Undo Go's `strconv.Quote` (what the kubelet writes). Label values are plain
/// `[A-Za-z0-9._-]`, so only the simple escapes are expected; others are refused, not guessed.
fn unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(|| format!("value {s:?} is not double-quoted"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => return Err(format!("unsupported escape \\{other}")),
            None => return Err("value ends in a lone backslash".to_owned()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_downward_api_lines() {
        let text = "app=\"gw\"\nistio=\"ingressgateway\"\n\npod-template-hash=\"7d9f\"\n";
        let l = parse(text).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l["istio"], "ingressgateway");
        assert_eq!(l["pod-template-hash"], "7d9f");
    }

    #[test]
    fn unquotes_go_escapes() {
        assert_eq!(parse("a=\"x\\\"y\\\\z\"").unwrap()["a"], "x\"y\\z");
    }

    #[test]
    fn rejects_malformed_lines_with_their_number() {
        assert_eq!(parse("a=\"1\"\nb\n").unwrap_err().0, 2);
        assert_eq!(parse("a=1\n").unwrap_err().0, 1);
        assert_eq!(parse("=\"1\"\n").unwrap_err().0, 1);
        assert!(parse("a=\"\\q\"").unwrap_err().1.contains("escape"));
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("labels")).unwrap().is_none());
        std::fs::write(dir.path().join("labels"), "istio=\"ingressgateway\"\n").unwrap();
        let l = read(&dir.path().join("labels")).unwrap().unwrap();
        assert_eq!(l["istio"], "ingressgateway");
    }
}
