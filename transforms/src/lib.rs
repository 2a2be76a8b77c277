//! Transform-script engines for lark-sink, behind one trait.
//!
//! Upstream records rarely arrive in the Lark envelope shape. A [`Transform`] turns one decoded
//! record value (plus its Kafka metadata) into zero, one or many values; the connector then
//! validates each output exactly like raw input. Transforms are configured Kafka Connect style
//! (`transforms=a,b`, `transforms.a.type=...`) and run in order as a [`Chain`]: every output of
//! one transform is fed to the next.
//!
//! Engines:
//!
//! - `identity` ([`Identity`]): passes the value through.
//! - `javascript` ([`javascript::JavaScript`]): QuickJS-NG through rquickjs.
//! - `lua` ([`lua::LuaTransform`]): Lua 5.4 through mlua.
//!
//! Both script engines share the sandbox rules of [`sandbox`]: a wall-clock limit per call, a heap
//! limit per interpreter, no file, network or process access, and a fresh interpreter after a
//! timeout or memory overrun. See `docs/transforms.md`.

use std::collections::BTreeMap;

use serde_json::Value;

mod chain;
pub mod javascript;
pub mod lua;
pub mod sandbox;

pub use chain::{engine_options, Chain, ENGINES};
pub use sandbox::Limits;

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

#[cfg(test)]
mod tests {
    use super::*;

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
