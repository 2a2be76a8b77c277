//! The configured transforms, built from Connect-style keys and applied in order.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::javascript::JavaScript;
use crate::lua::LuaTransform;
use crate::sandbox::{ScriptConfig, SCRIPT_OPTIONS};
use crate::{Identity, RecordMeta, Transform, TransformConfigError, TransformError};

/// The engines this build knows, by their `transforms.<name>.type` value.
pub const ENGINES: &[&str] = &["identity", "javascript", "lua"];

/// The options (`transforms.<name>.<option>`) each engine understands besides `type`.
/// `identity` takes none; the script engines take `file` or `source` and their limits.
pub fn engine_options(engine: &str) -> &'static [&'static str] {
    match engine {
        "javascript" | "lua" => SCRIPT_OPTIONS,
        _ => &[],
    }
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
    ///
    /// Script engines read their file and compile their script here: a missing file, a syntax
    /// error or a script without `process` fails now, naming the key.
    pub fn from_config(
        config: &BTreeMap<String, String>,
    ) -> Result<(Chain, Vec<String>), TransformConfigError> {
        let mut used = Vec::new();
        let Some(list) = config.get("transforms") else {
            return Ok((Chain::default(), used));
        };
        used.push("transforms".to_string());
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
            if !ENGINES.contains(&engine.as_str()) {
                return Err(TransformConfigError {
                    key: type_key,
                    message: format!(
                        "unknown transform type '{engine}' (known: {})",
                        ENGINES.join(", ")
                    ),
                });
            }
        }
        // Every `transforms.*` key must belong to a listed transform and be an option its engine
        // knows: a typo must fail at start-up, not silently change nothing. Checked before any
        // script is compiled, so the cheap mistakes are reported first.
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
                let known = engine_options(engine);
                return Err(TransformConfigError {
                    key: key.clone(),
                    message: if known.is_empty() {
                        format!(
                            "unknown option '{option}' for a {engine} transform (it takes none)"
                        )
                    } else {
                        format!(
                            "unknown option '{option}' for a {engine} transform (known: {})",
                            known.join(", ")
                        )
                    },
                });
            }
            used.push(key.clone());
        }
        let mut transforms: Vec<Box<dyn Transform>> = Vec::with_capacity(names.len());
        for name in &names {
            let engine = config[&format!("transforms.{name}.type")].as_str();
            transforms.push(match engine {
                "identity" => Box::new(Identity::new(*name)),
                "javascript" => {
                    Box::new(JavaScript::new(ScriptConfig::from_config(name, config)?)?)
                }
                "lua" => Box::new(LuaTransform::new(ScriptConfig::from_config(name, config)?)?),
                _ => unreachable!("engine names were checked above"),
            });
        }
        Ok((Chain { transforms }, used))
    }

    /// A chain of already built transforms (tests, benchmarks, embedding).
    pub fn from_transforms(transforms: Vec<Box<dyn Transform>>) -> Chain {
        Chain { transforms }
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    pub fn len(&self) -> usize {
        self.transforms.len()
    }

    /// The configured names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.transforms.iter().map(|t| t.name()).collect()
    }

    /// Runs the value through every transform. An empty result means the record was dropped.
    /// The first failure stops the chain: the record is dead-lettered with that error.
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
    use crate::RecordMeta;
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
}
