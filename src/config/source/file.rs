//! The file source: `--config` paths (multi-document YAML files, or directories whose
//! `*.yaml` / `*.yml` files are read sorted by name) into a `RawSet`.
//!
//! Non-Istio kinds (Deployments, Services, ...) are skipped so users can point meshgate at
//! their existing manifests. Every problem is collected, with its file and line.
//!
//! Depends on: `config::{raw, istio, yaml_lines, error}`, serde_yaml_ng, serde_path_to_error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::config::error::ConfigError;
use crate::config::istio::ObjectMeta;
use crate::config::raw::{Origin, RawSet, Res};
use crate::config::yaml_lines;

const API_GROUP: &str = "networking.istio.io/";
const API_VERSIONS: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];

/// The files `paths` stand for: files as given, directories expanded (sorted, not recursive).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<ConfigError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name: Arc<str> = p.display().to_string().into();
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| is_yaml(f) && f.is_file())
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(ConfigError::file(
                    &name,
                    0,
                    format!("cannot read directory: {e}"),
                )),
            },
            Ok(_) => files.push(p.clone()),
            Err(e) => errors.push(ConfigError::file(&name, 0, format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Read every file under `paths` into one `RawSet`.
pub fn load(paths: &[PathBuf]) -> Result<RawSet, Vec<ConfigError>> {
    let files = expand(paths)?;
    let mut set = RawSet::default();
    let mut errors = Vec::new();
    for f in &files {
        let name: Arc<str> = f.display().to_string().into();
        match std::fs::read_to_string(f) {
            Ok(text) => parse_into(&mut set, &name, &text, &mut errors),
            Err(e) => errors.push(ConfigError::file(&name, 0, format!("cannot read: {e}"))),
        }
        set.files.push(name.to_string());
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Parse one multi-document YAML text (named `file` in errors) into `set`.
pub(crate) fn parse_into(
    set: &mut RawSet,
    file: &Arc<str>,
    text: &str,
    errors: &mut Vec<ConfigError>,
) {
    // Each document's index moves into its resources (no copy).
    let mut lines = yaml_lines::index(text).unwrap_or_default().into_iter();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line() as u32);
                errors.push(ConfigError::file(file, line, format!("invalid YAML: {e}")));
                // The rest of the stream cannot be trusted once the parser has failed.
                return;
            }
        };
        let doc_lines = Arc::new(lines.next().unwrap_or_default());
        let origin = Origin {
            file: file.clone(),
            lines: doc_lines,
        };
        if let Err(e) = add_document(set, value, origin) {
            errors.push(e);
        }
    }
}

fn add_document(set: &mut RawSet, value: Value, origin: Origin) -> Result<(), ConfigError> {
    let Value::Mapping(map) = &value else {
        if value.is_null() {
            return Ok(()); // an empty document (`---` with nothing after it)
        }
        return Err(doc_error(
            &origin,
            "",
            "a document must be a mapping with apiVersion and kind",
        ));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() || api_version.is_empty() {
        return Err(doc_error(&origin, "", "document has no apiVersion or kind"));
    }
    let Some(version) = api_version.strip_prefix(API_GROUP) else {
        tracing::debug!(file = %origin.file, kind, api_version, "skipping non-Istio resource");
        return Ok(());
    };
    if !API_VERSIONS.contains(&version) {
        return Err(doc_error(
            &origin,
            "apiVersion",
            format!("unsupported apiVersion {api_version} (expected v1alpha3, v1beta1 or v1)"),
        ));
    }
    let meta: ObjectMeta = match map.get("metadata") {
        Some(m) => typed(m.clone(), &origin, "metadata")?,
        None => ObjectMeta::default(),
    };
    if meta.name.is_empty() {
        return Err(doc_error(
            &origin,
            "metadata.name",
            format!("{kind} has no metadata.name"),
        ));
    }
    let spec = map.get("spec").cloned().unwrap_or(Value::Null);
    let spec = if spec.is_null() {
        Value::Mapping(Default::default())
    } else {
        spec
    };
    match kind {
        "Gateway" => set.gateways.push(Res::new(
            "Gateway",
            meta,
            typed(spec, &origin, "spec")?,
            origin,
        )),
        "VirtualService" => set.virtual_services.push(Res::new(
            "VirtualService",
            meta,
            typed(spec, &origin, "spec")?,
            origin,
        )),
        "DestinationRule" => set.destination_rules.push(Res::new(
            "DestinationRule",
            meta,
            typed(spec, &origin, "spec")?,
            origin,
        )),
        "ServiceEntry" => set.service_entries.push(Res::new(
            "ServiceEntry",
            meta,
            typed(spec, &origin, "spec")?,
            origin,
        )),
        "WorkloadEntry" => set.workload_entries.push(Res::new(
            "WorkloadEntry",
            meta,
            typed(spec, &origin, "spec")?,
            origin,
        )),
        other => {
            tracing::warn!(file = %origin.file, kind = other, "skipping unsupported Istio kind");
        }
    }
    Ok(())
}

/// Deserialize `value` (found at `base` in the document) into `T`, naming the failing field.
fn typed<T: DeserializeOwned>(value: Value, origin: &Origin, base: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            base.to_owned()
        } else if inner.starts_with('[') {
            format!("{base}{inner}")
        } else {
            format!("{base}.{inner}")
        };
        doc_error(origin, &path, e.into_inner().to_string())
    })
}

fn doc_error(origin: &Origin, path: &str, message: impl Into<String>) -> ConfigError {
    let line = if path.is_empty() {
        origin.lines.start
    } else {
        origin.lines.line_of(path)
    };
    ConfigError {
        file: origin.file.clone(),
        line,
        resource: None,
        field: (!path.is_empty()).then(|| path.to_owned()),
        message: message.into(),
    }
}

#[allow(dead_code, reason = "used by tests and the Kubernetes source")]
pub(crate) fn parse_str(file: &str, text: &str) -> Result<RawSet, Vec<ConfigError>> {
    let mut set = RawSet::default();
    let mut errors = Vec::new();
    parse_into(&mut set, &Arc::from(file), text, &mut errors);
    set.files.push(file.to_owned());
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_other_kinds_and_defaults_namespace() {
        let set = parse_str(
            "a.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n\
             apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: vs}\n\
             spec: {hosts: [a]}\n",
        )
        .unwrap();
        assert_eq!(set.virtual_services.len(), 1);
        assert_eq!(set.virtual_services[0].namespace, "default");
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: heavy\n";
        let errs = parse_str("vs.yaml", text).unwrap_err();
        let msg = errs[0].to_string();
        assert!(
            msg.starts_with("vs.yaml:10: spec.http[0].route[0].weight: "),
            "{msg}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let errs = parse_str("bad.yaml", "kind: [\n").unwrap_err();
        assert!(errs[0].to_string().starts_with("bad.yaml:"), "{}", errs[0]);
        assert!(errs[0].line > 0);
    }

    #[test]
    fn unknown_istio_version_is_an_error() {
        let errs = parse_str(
            "v.yaml",
            "apiVersion: networking.istio.io/v9\nkind: Gateway\nmetadata: {name: g}\n",
        )
        .unwrap_err();
        assert!(errs[0].to_string().contains("unsupported apiVersion"));
    }
}
