//! `ConfigError`: one problem in the configuration, located as precisely as we can.
//!
//! Depends on: std, thiserror.

use std::fmt;
use std::sync::Arc;

/// A configuration error or warning: `file:line: Kind ns/name: field.path: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in (empty for problems not tied to a file).
    pub file: Arc<str>,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// `Kind namespace/name` of the resource, when the problem is inside one.
    pub resource: Option<String>,
    /// Field path inside the resource's `spec`, e.g. `http[0].route[1].weight`.
    pub field: Option<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl ConfigError {
    /// A problem with a whole file (I/O, YAML syntax).
    pub(crate) fn file(file: &Arc<str>, line: u32, message: impl Into<String>) -> Self {
        Self {
            file: file.clone(),
            line,
            resource: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            f.write_str(&self.file)?;
            if self.line > 0 {
                write!(f, ":{}", self.line)?;
            }
            f.write_str(": ")?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(p) = &self.field {
            if !p.is_empty() {
                write!(f, "{p}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// A list of errors, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
