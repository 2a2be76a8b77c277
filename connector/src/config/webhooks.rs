//! Custom-bot webhooks: the `lark.webhooks.<name>.*` keys (lark-api.md §8).
//!
//! A family of keys rather than fixed ones, so it is parsed here, on its own: every option is
//! checked (`url`, `token`, `secret`), a `.token` is joined to `lark.domain`'s base URL, and the
//! hook URL, which ends in the hook token, never shows in a `{:?}`.

use std::collections::BTreeMap;

use super::{key_err, ConfigError};
use crate::lark::WebhookConfig;
use crate::secret::Secret;

/// `lark.webhooks.<name>.url` (or `.token`, joined to `lark.domain`) and `.secret`.
pub(super) fn parse(
    map: &BTreeMap<String, String>,
    base_url: &str,
) -> Result<BTreeMap<String, WebhookConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    for name in names(map)? {
        let get = |o: &str| {
            map.get(&format!("lark.webhooks.{name}.{o}"))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let url = match (get("url"), get("token")) {
            (Some(_), Some(_)) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.token"),
                    "set either .url or .token, not both",
                ))
            }
            (Some(u), None) if u.starts_with("https://") || u.starts_with("http://") => {
                u.to_string()
            }
            (Some(u), None) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.url"),
                    format!("'{u}' is not an http(s) URL"),
                ))
            }
            // lark-api.md §8 / §10: the hook lives under the domain's OpenAPI base.
            (None, Some(t)) => format!("{base_url}/open-apis/bot/v2/hook/{t}"),
            (None, None) => {
                return Err(key_err(
                    &format!("lark.webhooks.{name}.url"),
                    "missing: a webhook needs .url (or .token)",
                ))
            }
        };
        let secret = get("secret").map(Secret::new);
        out.insert(name.to_string(), WebhookConfig { url, secret });
    }
    Ok(out)
}

/// The webhook names, in key order, each key checked for its shape and option.
fn names(map: &BTreeMap<String, String>) -> Result<Vec<&str>, ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    for key in map.keys() {
        let Some(rest) = key.strip_prefix("lark.webhooks.") else {
            continue;
        };
        let Some((name, option)) = rest.rsplit_once('.') else {
            return Err(key_err(
                key,
                "expected lark.webhooks.<name>.url, .token or .secret",
            ));
        };
        if !matches!(option, "url" | "token" | "secret") {
            return Err(key_err(
                key,
                format!("unknown webhook option '{option}' (url, token, secret)"),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(key_err(
                key,
                "a webhook name uses letters, digits, '-' and '_'",
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, with};
    use super::super::ConnectorConfig;
    use serde_json::json;

    #[test]
    fn webhooks_and_webhook_only_connectors() {
        let mut j = with("lark.webhooks.ops.token", "abc");
        j["config"]["lark.webhooks.ops.secret"] = json!("s1");
        j["config"]["lark.webhooks.team.url"] =
            json!("https://open.larksuite.com/open-apis/bot/v2/hook/xyz");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert_eq!(
            c.lark.webhooks["ops"].url,
            "https://open.feishu.cn/open-apis/bot/v2/hook/abc"
        );
        assert_eq!(
            c.lark.webhooks["ops"].secret.as_ref().map(|s| s.expose()),
            Some("s1")
        );
        assert!(c.lark.webhooks["team"].secret.is_none());
        assert_eq!(c.as_given["lark.webhooks.ops.secret"], "***");
        // The hook URL ends in the hook token: masked like `.token`, in the echo and in Debug.
        assert_eq!(c.as_given["lark.webhooks.team.url"], "***");
        assert_eq!(c.as_given["lark.webhooks.ops.token"], "***");
        let debug = format!("{:?}", c.lark.webhooks);
        assert!(!debug.contains("xyz") && !debug.contains("abc"), "{debug}");
        assert!(
            debug.contains("https://open.larksuite.com/open-apis/bot/v2/hook/***"),
            "{debug}"
        );
        // Without an app, webhooks alone are enough; without either, the app is missing.
        let mut j = with("lark.webhooks.ops.token", "abc");
        let cfg = j["config"].as_object_mut().unwrap();
        cfg.remove("lark.app.id");
        cfg.remove("lark.app.secret");
        let c = ConnectorConfig::from_json(&j).unwrap();
        assert!(c.lark.app_id.is_empty());
        j["config"]
            .as_object_mut()
            .unwrap()
            .remove("lark.webhooks.ops.token");
        assert!(err(j).contains("'lark.app.id': missing"));
    }
}
