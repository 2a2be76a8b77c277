//! Transform-script engines for lark-sink, behind one trait.
//!
//! Upstream records rarely arrive in the Lark envelope shape. A [`Transform`] turns one decoded
//! record value (plus its Kafka metadata) into zero, one or many values; the connector then
//! validates each output exactly like raw input. Transforms are configured Kafka Connect style
//! (`transforms=a,b`, `transforms.a.type=...`) and run in order as a [`Chain`]: every output of
//! one transform is fed to the next.
//!
//! Only the `identity` engine exists so far; the scripting engines plug in behind the same trait.

use std::collections::BTreeMap;

use serde_json::Value;

/// Kafka metadata of the record being transformed. Scripts can read it but not change it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecordMeta {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record key as UTF-8 text when it is valid UTF-8.
    pub key: Option<String>,
    /// Header values as UTF-8 text (lossy); binary headers are rare in alerting pipelines.
    pub headers: BTreeMap<String, String>,
    /// Milliseconds since the epoch, when the broker provided one.
    pub timestamp: Option<i64>,
}

/// Why a transform could not handle a record. The record is dead-lettered with this text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("transform '{transform}' failed: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct TransformError {
    /// The configured name of the transform (`transforms.<name>.*`).
    pub transform: String,
    pub message: String,
    /// Script line of the failure, when the engine knows it.
    pub line: Option<u32>,
}

/// One record in, zero (drop), one or many values out.
///
/// Engines keep their interpreter state across calls (one instance per worker), hence `&mut self`.
pub trait Transform: Send {
    /// The configured name, used in error messages.
    fn name(&self) -> &str;
    fn apply(&mut self, value: Value, meta: &RecordMeta) -> Result<Vec<Value>, TransformError>;
}

/// Passes the value through unchanged. Useful as a placeholder in a chain and in tests.
pub struct Identity {
    name: String,
}

impl Identity {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Transform for Identity {
    fn name(&self) -> &str {
        &self.name
    }
    fn apply(&mut self, value: Value, _meta: &RecordMeta) -> Result<Vec<Value>, TransformError> {
        Ok(vec![value])
    }
}

/// A configuration problem in the `transforms*` keys; names the offending key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {message}")]
pub struct TransformConfigError {
    pub key: String,
    pub message: String,
}

/// The engines this build knows, by their `transforms.<name>.type` value.
pub const ENGINES: &[&str] = &["identity"];

/// The options (`transforms.<name>.<option>`) each engine understands besides `type`.
/// `identity` takes none; each scripting engine adds its own (file, source, limits) here.
fn engine_options(_engine: &str) -> &'static [&'static str] {
    &[]
}

/// The configured transforms, applied in order.
#[derive(Default)]
pub struct Chain {
    transforms: Vec<Box<dyn Transform>>,
}

impl Chain {
    /// Builds the chain from Connect-style keys. `config` holds every key of the connector config;
    /// only `transforms` and `transforms.*` are read. Returns the chain and the keys it consumed, so
    /// the caller can reject unknown keys.
    pub fn from_config(
        config: &BTreeMap<String, String>,
    ) -> Result<(Chain, Vec<String>), TransformConfigError> {
        let mut used = Vec::new();
        let Some(list) = config.get("transforms") else {
            return Ok((Chain::default(), used));
        };
        used.push("transforms".to_string());
        let mut transforms: Vec<Box<dyn Transform>> = Vec::new();
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(TransformConfigError {
                    key: "transforms".into(),
                    message: format!("transform '{name}' is listed twice"),
                });
            }
            let type_key = format!("transforms.{name}.type");
            let Some(engine) = config.get(&type_key) else {
                return Err(TransformConfigError {
                    key: type_key,
                    message: "missing: every listed transform needs a type".into(),
                });
            };
            match engine.as_str() {
                "identity" => transforms.push(Box::new(Identity::new(*name))),
                other => {
                    return Err(TransformConfigError {
                        key: type_key,
                        message: format!(
                            "unknown transform type '{other}' (known: {})",
                            ENGINES.join(", ")
                        ),
                    })
                }
            }
        }
        // Every `transforms.*` key must belong to a listed transform and be an option its engine
        // knows: a typo must fail at start-up, not silently change nothing.
        for key in config.keys() {
            let Some(rest) = key.strip_prefix("transforms.") else {
                continue;
            };
            let (name, option) = rest.split_once('.').unwrap_or((rest, ""));
            if !names.contains(&name) {
                return Err(TransformConfigError {
                    key: key.clone(),
                    message: format!("transform '{name}' is not listed in 'transforms'"),
                });
            }
            let engine = config
                .get(&format!("transforms.{name}.type"))
                .map(String::as_str)
                .unwrap_or_default();
            if option != "type" && !engine_options(engine).contains(&option) {
                return Err(TransformConfigError {
                    key: key.clone(),
                    message: format!("unknown option '{option}' for a {engine} transform"),
                });
            }
            used.push(key.clone());
        }
        Ok((Chain { transforms }, used))
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Runs the value through every transform. An empty result means the record was dropped.
    pub fn apply(&mut self, value: Value, meta: &RecordMeta) -> Result<Vec<Value>, TransformError> {
        let mut values = vec![value];
        for t in &mut self.transforms {
            let mut next = Vec::with_capacity(values.len());
            for v in values {
                next.extend(t.apply(v, meta)?);
            }
            values = next;
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_chain_passes_value_through() {
        let (mut chain, used) = Chain::from_config(&cfg(&[])).unwrap();
        assert!(chain.is_empty() && used.is_empty());
        let out = chain
            .apply(json!({"a": 1}), &RecordMeta::default())
            .unwrap();
        assert_eq!(out, vec![json!({"a": 1})]);
    }

    #[test]
    fn identity_chain_is_built_in_order() {
        let (mut chain, used) = Chain::from_config(&cfg(&[
            ("transforms", "a, b"),
            ("transforms.a.type", "identity"),
            ("transforms.b.type", "identity"),
        ]))
        .unwrap();
        assert_eq!(used.len(), 3);
        assert_eq!(chain.transforms.len(), 2);
        assert_eq!(chain.transforms[1].name(), "b");
        let out = chain.apply(json!([1, 2]), &RecordMeta::default()).unwrap();
        assert_eq!(out, vec![json!([1, 2])]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = Chain::from_config(&cfg(&[("transforms", "a")]))
            .err()
            .unwrap();
        assert_eq!(err.key, "transforms.a.type");
        let err = Chain::from_config(&cfg(&[("transforms", "a"), ("transforms.a.type", "lisp")]))
            .err()
            .unwrap();
        assert!(
            err.message.contains("unknown transform type 'lisp'"),
            "{err}"
        );
        let err = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", "identity"),
            ("transforms.b.type", "identity"),
        ]))
        .err()
        .unwrap();
        assert_eq!(err.key, "transforms.b.type");
        let err = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", "identity"),
            ("transforms.a.sauce", "x"),
        ]))
        .err()
        .unwrap();
        assert_eq!(err.key, "transforms.a.sauce");
        assert!(err.message.contains("unknown option 'sauce'"), "{err}");
        let err = Chain::from_config(&cfg(&[
            ("transforms", "a,a"),
            ("transforms.a.type", "identity"),
        ]))
        .err()
        .unwrap();
        assert!(err.message.contains("twice"));
    }

    #[test]
    fn error_display_includes_line() {
        let e = TransformError {
            transform: "js".into(),
            message: "boom".into(),
            line: Some(3),
        };
        assert_eq!(e.to_string(), "transform 'js' failed: boom (line 3)");
    }
}
