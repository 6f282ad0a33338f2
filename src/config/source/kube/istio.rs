//! Istio objects from the API server (`DynamicObject`s) into `Res<T>`: metadata, and `spec`
//! deserialized into the same `config::istio` serde types the file source uses, so both
//! sources follow one code path. Errors name the object (`kubernetes:Kind/ns/name`) and the
//! failing field (`spec.http[0].route[0].weight`), as the file source does.
//!
//! Depends on: kube-core (`DynamicObject`), serde_path_to_error, `config::{raw, istio, error}`.

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use crate::config::error::ConfigError;
use crate::config::istio::ObjectMeta;
use crate::config::raw::{Origin, Res};

/// `obj` (of `kind`) as a resource, or the error that makes it unusable.
pub(crate) fn resource<T: DeserializeOwned>(
    kind: &'static str,
    obj: &DynamicObject,
) -> Result<Res<T>, ConfigError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let namespace = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let origin = Origin::unlined(format!("kubernetes:{kind}/{namespace}/{name}"));
    let spec = match obj.data.get("spec") {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(v) => v.clone(),
    };
    let spec: T = serde_path_to_error::deserialize(spec).map_err(|e| {
        let inner = e.path().to_string();
        let field = if inner == "." || inner.is_empty() {
            "spec".to_owned()
        } else if inner.starts_with('[') {
            format!("spec{inner}")
        } else {
            format!("spec.{inner}")
        };
        ConfigError {
            file: origin.file.clone(),
            line: 0,
            resource: None,
            field: Some(field),
            message: e.into_inner().to_string(),
        }
    })?;
    let meta = ObjectMeta {
        name,
        namespace: Some(namespace),
        labels: obj.metadata.labels.clone().unwrap_or_default(),
    };
    Ok(Res::new(kind, meta, spec, origin))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::istio::VirtualService;

    fn dynamic(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn spec_and_metadata() {
        let obj = dynamic(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "shop", "labels": {"a": "b"}, "resourceVersion": "7"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
        }));
        let vs: Res<VirtualService> = resource("VirtualService", &obj).unwrap();
        assert_eq!(vs.id(), "VirtualService shop/r");
        assert_eq!(vs.labels["a"], "b");
        assert_eq!(vs.spec.hosts, ["reviews"]);
        assert_eq!(&*vs.origin.file, "kubernetes:VirtualService/shop/r");
    }

    #[test]
    fn type_errors_name_object_and_field() {
        let obj = dynamic(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": "heavy"}]}]}
        }));
        let e = resource::<VirtualService>("VirtualService", &obj).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("kubernetes:VirtualService/shop/r: spec.http[0].route[0].weight: "),
            "{msg}"
        );
    }

    #[test]
    fn missing_spec_is_empty() {
        let obj = dynamic(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                 "metadata": {"name": "r", "namespace": "n"}}),
        );
        let vs: Res<VirtualService> = resource("VirtualService", &obj).unwrap();
        assert!(vs.spec.hosts.is_empty());
    }
}
