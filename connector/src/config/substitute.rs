//! `${env:NAME}` / `${file:PATH}` substitution, and the masked copy of the keys as written.
//!
//! Both work on the raw `config` object before any key is checked: substitution so that a file
//! can hold references to its secrets instead of the secrets, and `as_given` so that the admin
//! API can show what the user wrote without showing a literal secret ([`mask_config_value`],
//! whose one rule, [`crate::secret::is_secret_key`], decides what is a secret).

use std::collections::BTreeMap;

use super::{key_err, ConfigError};
use crate::secret::mask_config_value;

/// A flat key → value config.
type ConfigMap = BTreeMap<String, String>;

/// The `config` object's values as strings, substituted, and the same keys as written with
/// literal secrets masked (what `GET /connectors/{name}` shows).
pub(super) fn substitute_all(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<(ConfigMap, ConfigMap), ConfigError> {
    let mut map = BTreeMap::new();
    let mut as_given = BTreeMap::new();
    for (k, v) in config {
        // Connect configs are strings; numbers and booleans are accepted as a courtesy.
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(key_err(k, "must be a string")),
        };
        as_given.insert(k.clone(), mask_config_value(k, &s));
        map.insert(k.clone(), substitute(k, &s)?);
    }
    Ok((map, as_given))
}

/// `map` with literal secrets masked: `as_given` for a config built from a map directly.
pub(super) fn masked(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), mask_config_value(k, v)))
        .collect()
}

/// Replaces `${env:NAME}` and `${file:PATH}` in a value. A file's trailing newline is dropped
/// (secrets mounted by Kubernetes or written by `echo` end with one).
fn substitute(key: &str, value: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            key_err(
                key,
                "unterminated '${' (expected ${env:NAME} or ${file:PATH})",
            )
        })?;
        let expr = &after[..end];
        let replacement = if let Some(var) = expr.strip_prefix("env:") {
            std::env::var(var)
                .map_err(|_| key_err(key, format!("environment variable '{var}' is not set")))?
        } else if let Some(path) = expr.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| key_err(key, format!("cannot read file '{path}': {e}")))?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        } else {
            return Err(key_err(
                key,
                format!(
                    "unknown substitution '${{{expr}}}' (expected ${{env:NAME}} or ${{file:PATH}})"
                ),
            ));
        };
        out.push_str(&replacement);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, with};
    use super::super::ConnectorConfig;
    use serde_json::json;

    #[test]
    fn substitution_from_env_and_file() {
        std::env::set_var("LARK_SINK_TEST_SECRET", "from-env");
        let dir = std::env::temp_dir().join(format!("lark-sink-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let mut j = with("lark.app.secret", &format!("${{file:{}}}", f.display()));
        j["config"]["lark.app.id"] = json!("cli_${env:LARK_SINK_TEST_SECRET}");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(c.lark.app_secret.expose(), "from-file");
        assert_eq!(c.lark.app_id, "cli_from-env");
        let e = err(with("lark.app.secret", "${env:LARK_SINK_NOT_SET_ANYWHERE}"));
        assert!(
            e.contains("'lark.app.secret'") && e.contains("LARK_SINK_NOT_SET_ANYWHERE"),
            "{e}"
        );
        assert!(err(with("lark.app.secret", "${vault:x}")).contains("unknown substitution"));
    }
}
