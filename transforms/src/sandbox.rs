//! What the script engines share: their options, their limits, the per-call deadline, and the
//! rules for reading a script's result.
//!
//! Every script engine takes the same options (`transforms.<name>.*`):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `file` | | path of the script (relative paths: against the working directory) |
//! | `source` | | the script itself, inline (exactly one of `file` and `source`) |
//! | `timeout.ms` | 100 | wall-clock limit of one `process` call |
//! | `memory.limit.bytes` | 32 MiB | heap limit of the interpreter |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TransformConfigError, TransformError};

/// The options every script engine understands besides `type`.
pub const SCRIPT_OPTIONS: &[&str] = &["file", "source", "timeout.ms", "memory.limit.bytes"];

/// Per-transform resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit of one call of `process` (`timeout.ms`).
    pub timeout: Duration,
    /// Heap limit of the interpreter, helpers and script state included (`memory.limit.bytes`).
    pub memory: usize,
}

impl Limits {
    pub const DEFAULT_TIMEOUT_MS: u64 = 100;
    pub const DEFAULT_MEMORY: usize = 32 << 20;
    /// Below this an interpreter cannot even start with its helpers loaded.
    pub const MIN_MEMORY: usize = 1 << 20;
    /// Running the script's top level (definitions, lookup tables) may take this long at least:
    /// it happens once per interpreter, not per record.
    pub const MIN_LOAD_TIME: Duration = Duration::from_secs(1);

    /// The limit for running the script's top level once.
    pub fn load_timeout(&self) -> Duration {
        self.timeout.max(Self::MIN_LOAD_TIME)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(Self::DEFAULT_TIMEOUT_MS),
            memory: Self::DEFAULT_MEMORY,
        }
    }
}

/// A script with its name and limits, as configured.
#[derive(Debug, Clone)]
pub struct ScriptConfig {
    /// The transform's configured name.
    pub name: String,
    /// The script text.
    pub source: String,
    /// The name the interpreter gives the script in messages and stack traces: the `file` value,
    /// or `transforms.<name>.source` for an inline script.
    pub chunk_name: String,
    /// The key that holds the script (`transforms.<name>.file` or `.source`), for config errors.
    pub key: String,
    pub limits: Limits,
}

impl ScriptConfig {
    /// An inline script with default limits (tests, benchmarks).
    pub fn inline(name: &str, source: &str) -> Self {
        ScriptConfig {
            name: name.to_string(),
            source: source.to_string(),
            chunk_name: format!("transforms.{name}.source"),
            key: format!("transforms.{name}.source"),
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the options of transform `name` from the `transforms.*` keys. The script file is
    /// read here, so a missing or unreadable file fails at start-up.
    pub fn from_config(
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Self, TransformConfigError> {
        let key = |opt: &str| format!("transforms.{name}.{opt}");
        let err = |k: String, message: String| TransformConfigError { key: k, message };
        let file_key = key("file");
        let source_key = key("source");
        let (source, chunk_name, script_key) = match (
            config.get(&file_key),
            config.get(&source_key),
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    source_key,
                    format!("set either '{file_key}' or this key, not both"),
                ))
            }
            (None, None) => {
                return Err(err(
                    file_key,
                    format!(
                        "missing: a script transform needs 'file' or 'source' ('{source_key}')"
                    ),
                ))
            }
            (Some(path), None) => {
                if path.trim().is_empty() {
                    return Err(err(file_key, "must not be empty".into()));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                        let cwd = std::env::current_dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_else(|_| "?".into());
                        err(
                            file_key.clone(),
                            format!("cannot read script '{path}': {e} (relative paths are resolved against the working directory, {cwd})"),
                        )
                    })?;
                (text, path.clone(), file_key)
            }
            (None, Some(src)) => (src.clone(), source_key.clone(), source_key),
        };
        if source.trim().is_empty() {
            return Err(err(script_key, "the script is empty".into()));
        }
        let mut limits = Limits::default();
        if let Some(v) = config.get(&key("timeout.ms")) {
            let ms: u64 = v
                .trim()
                .parse()
                .ok()
                .filter(|ms| (1..=60_000).contains(ms))
                .ok_or_else(|| {
                    err(
                        key("timeout.ms"),
                        format!("'{v}' is not a whole number of milliseconds from 1 to 60000"),
                    )
                })?;
            limits.timeout = Duration::from_millis(ms);
        }
        if let Some(v) = config.get(&key("memory.limit.bytes")) {
            let bytes: usize = v
                .trim()
                .parse()
                .ok()
                .filter(|b| *b >= Limits::MIN_MEMORY)
                .ok_or_else(|| {
                    err(
                        key("memory.limit.bytes"),
                        format!(
                            "'{v}' is not a whole number of bytes of at least {} (1 MiB)",
                            Limits::MIN_MEMORY
                        ),
                    )
                })?;
            limits.memory = bytes;
        }
        Ok(ScriptConfig {
            name: name.to_string(),
            source,
            chunk_name,
            key: script_key,
            limits,
        })
    }

    /// A config error about the script itself (does not compile, no `process`).
    pub fn config_error(&self, message: impl Into<String>) -> TransformConfigError {
        TransformConfigError {
            key: self.key.clone(),
            message: message.into(),
        }
    }

    pub fn error(&self, message: impl Into<String>, line: Option<u32>) -> TransformError {
        TransformError {
            transform: self.name.clone(),
            message: message.into(),
            line,
        }
    }

    pub fn timeout_message(&self) -> String {
        format!(
            "timed out after {} ms (transforms.{}.timeout.ms)",
            self.limits.timeout.as_millis(),
            self.name
        )
    }

    pub fn memory_message(&self) -> String {
        format!(
            "memory limit of {} bytes exceeded (transforms.{}.memory.limit.bytes)",
            self.limits.memory, self.name
        )
    }

    /// The first `<chunk_name>:<line>` in an interpreter's message or stack trace.
    pub fn line_in(&self, text: &str) -> Option<u32> {
        line_after(text, &self.chunk_name)
    }
}

/// The first line number written as `<chunk>:<digits>` in `text`.
pub fn line_after(text: &str, chunk: &str) -> Option<u32> {
    let pattern = format!("{chunk}:");
    let mut rest = text;
    while let Some(pos) = rest.find(&pattern) {
        let after = &rest[pos + pattern.len()..];
        let digits: &str = &after[..after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len())];
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
        rest = after;
    }
    None
}

/// A wall-clock deadline shared between an engine and its interrupt hook.
///
/// The hook runs inside the interpreter every few thousand instructions, so `expired` must be
/// cheap: one atomic load and, while armed, one clock read.
#[derive(Clone)]
pub struct Deadline(Arc<DeadlineInner>);

struct DeadlineInner {
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX` when disarmed.
    at: AtomicU64,
    /// Set by `expired` when it first answers true, so the engine can tell a timeout from a
    /// script error that merely mentions one.
    fired: AtomicBool,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline(Arc::new(DeadlineInner {
            base: Instant::now(),
            at: AtomicU64::new(u64::MAX),
            fired: AtomicBool::new(false),
        }))
    }
}

impl Deadline {
    pub fn arm(&self, limit: Duration) {
        let at = self.0.base.elapsed().saturating_add(limit).as_nanos();
        self.0.fired.store(false, Ordering::Relaxed);
        self.0
            .at
            .store(u64::try_from(at).unwrap_or(u64::MAX - 1), Ordering::Relaxed);
    }

    pub fn disarm(&self) {
        self.0.at.store(u64::MAX, Ordering::Relaxed);
    }

    /// Called by the interrupt hook: true once the armed deadline has passed.
    pub fn expired(&self) -> bool {
        let at = self.0.at.load(Ordering::Relaxed);
        if at == u64::MAX {
            return false;
        }
        let now = u64::try_from(self.0.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now >= at {
            self.0.fired.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Whether the hook stopped the script since the last `arm`.
    pub fn fired(&self) -> bool {
        self.0.fired.load(Ordering::Relaxed)
    }
}

/// Where `console.log` (JavaScript) and `print` (Lua) go: the connector's log, tagged with the
/// transform's name. Levels: 0 debug, 1 info, 2 warn, 3 error.
pub fn script_log(transform: &str, level: i32, message: &str) {
    match level {
        i32::MIN..=0 => tracing::debug!(target: "transform", transform, "{message}"),
        1 => tracing::info!(target: "transform", transform, "{message}"),
        2 => tracing::warn!(target: "transform", transform, "{message}"),
        _ => tracing::error!(target: "transform", transform, "{message}"),
    }
}

/// Reads what `process` returned: `null`/`undefined` or an empty array drop the record, an
/// object is one output, an array of objects is one output per element.
pub fn outputs(script: &ScriptConfig, value: Value) -> Result<Vec<Value>, TransformError> {
    const EXPECTED: &str = "expected an object (one message), an array of objects (several), \
                            or null/nothing (drop the record)";
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(_) => Ok(vec![value]),
        Value::Array(items) => {
            if let Some((i, bad)) = items.iter().enumerate().find(|(_, v)| !v.is_object()) {
                return Err(script.error(
                    format!(
                        "process returned an array whose element {i} is {}; {EXPECTED}",
                        a_json_type(bad)
                    ),
                    None,
                ));
            }
            Ok(items)
        }
        other => Err(script.error(
            format!("process returned {}; {EXPECTED}", a_json_type(&other)),
            None,
        )),
    }
}

fn a_json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_line_of_the_chunk() {
        let stack = "    at f (helpers.js:10:3)\n    at process (x.js:7:12)\n";
        assert_eq!(line_after(stack, "x.js"), Some(7));
        assert_eq!(line_after("x.js:oops x.js:4: boom", "x.js"), Some(4));
        assert_eq!(line_after("nothing here", "x.js"), None);
    }

    #[test]
    fn deadline_fires_only_when_armed_and_passed() {
        let d = Deadline::default();
        assert!(!d.expired());
        d.arm(Duration::from_secs(60));
        assert!(!d.expired() && !d.fired());
        d.arm(Duration::ZERO);
        assert!(d.expired() && d.fired());
        d.disarm();
        assert!(!d.expired());
        d.arm(Duration::from_secs(60));
        assert!(!d.fired());
    }

    #[test]
    fn outputs_follow_the_return_convention() {
        let s = ScriptConfig::inline("t", "x");
        assert_eq!(outputs(&s, Value::Null).unwrap(), Vec::<Value>::new());
        assert_eq!(outputs(&s, json!([])).unwrap(), Vec::<Value>::new());
        assert_eq!(outputs(&s, json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(outputs(&s, json!([{"a": 1}, {"b": 2}])).unwrap().len(), 2);
        let e = outputs(&s, json!("hi")).unwrap_err();
        assert!(e.message.contains("returned a string"), "{e}");
        let e = outputs(&s, json!([{}, 3])).unwrap_err();
        assert!(e.message.contains("element 1 is a number"), "{e}");
    }

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_and_name_their_key() {
        let s = ScriptConfig::from_config("a", &cfg(&[("transforms.a.source", "x")])).unwrap();
        assert_eq!(s.limits, Limits::default());
        assert_eq!(s.chunk_name, "transforms.a.source");
        let e = ScriptConfig::from_config("a", &cfg(&[])).unwrap_err();
        assert_eq!(e.key, "transforms.a.file");
        let e = ScriptConfig::from_config(
            "a",
            &cfg(&[("transforms.a.source", "x"), ("transforms.a.file", "y")]),
        )
        .unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
        let e = ScriptConfig::from_config("a", &cfg(&[("transforms.a.file", "/nonexistent/x.js")]))
            .unwrap_err();
        assert_eq!(e.key, "transforms.a.file");
        assert!(
            e.message.contains("cannot read script '/nonexistent/x.js'"),
            "{e}"
        );
        let e = ScriptConfig::from_config(
            "a",
            &cfg(&[
                ("transforms.a.source", "x"),
                ("transforms.a.timeout.ms", "0"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.key, "transforms.a.timeout.ms");
        let e = ScriptConfig::from_config(
            "a",
            &cfg(&[
                ("transforms.a.source", "x"),
                ("transforms.a.memory.limit.bytes", "1000"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.key, "transforms.a.memory.limit.bytes");
        let s = ScriptConfig::from_config(
            "a",
            &cfg(&[
                ("transforms.a.source", "x"),
                ("transforms.a.timeout.ms", "250"),
                ("transforms.a.memory.limit.bytes", "4194304"),
            ]),
        )
        .unwrap();
        assert_eq!(s.limits.timeout, Duration::from_millis(250));
        assert_eq!(s.limits.memory, 4 << 20);
    }
}
