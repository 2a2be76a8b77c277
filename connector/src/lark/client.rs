//! The Lark calls lark-sink makes, over one shared HTTP connection pool.
//!
//! Every call goes through [`read_response`], which sends the request and hands the answer to
//! [`read_answer`]: the JSON body of a success or a classified [`LarkError`]; the token rule of lark-api.md §1.6 (evict, re-mint,
//! retry once, then give up as a configuration error) lives in [`LarkClient::authorized`].

use std::time::Duration;

use serde_json::{json, Value};

use super::classify::{read_answer, Answer, ErrorClass, LarkError};
use super::token::TokenCache;
use crate::config::{LarkConfig, WebhookConfig};
use crate::secret::Secret;
use std::collections::BTreeMap;

/// A delivered message, as Lark reported it (lark-api.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOk {
    pub message_id: String,
    pub chat_id: String,
    pub log_id: Option<String>,
}

pub struct LarkClient {
    http: reqwest::Client,
    base_url: String,
    /// `…/im/v1/messages?receive_id_type=T` for each id type, parsed once: parsing a URL (with
    /// its IDNA pass) per message showed up in profiles.
    send_urls: Vec<(&'static str, reqwest::Url)>,
    tokens: TokenCache,
    /// Whether an app is configured (a webhook-only connector has none).
    has_app: bool,
    webhooks: BTreeMap<String, WebhookConfig>,
}

/// The send body (lark-api.md §2.1); a struct, not a `json!` map, to skip the map allocations.
#[derive(serde::Serialize)]
struct SendBody<'a> {
    receive_id: &'a str,
    msg_type: &'a str,
    content: &'a str,
    uuid: &'a str,
}

impl LarkClient {
    pub fn new(cfg: &LarkConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("lark-sink/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tokens = TokenCache::new(
            http.clone(),
            &cfg.base_url,
            cfg.app_id.clone(),
            cfg.app_secret.clone(),
            cfg.token_refresh_margin,
        );
        let send_urls = ["open_id", "union_id", "user_id", "email", "chat_id"]
            .into_iter()
            .filter_map(|t| {
                let url = format!(
                    "{}/open-apis/im/v1/messages?receive_id_type={t}",
                    cfg.base_url
                );
                reqwest::Url::parse(&url).ok().map(|u| (t, u))
            })
            .collect();
        Ok(LarkClient {
            http,
            base_url: cfg.base_url.clone(),
            send_urls,
            tokens,
            has_app: !cfg.app_id.is_empty(),
            webhooks: cfg.webhooks.clone(),
        })
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Whether a Lark app is configured (`lark.app.id`); without one only webhooks can be used.
    pub fn has_app(&self) -> bool {
        self.has_app
    }

    /// Posts a message to custom-bot webhook `name` (lark-api.md §8). Webhooks answer HTTP 200
    /// with a non-zero `code` on failure, which [`read_response`] classifies like any Lark code.
    /// A 19021 (signature or clock skew) is re-signed and sent once more, as the spec advises.
    pub async fn send_webhook(
        &self,
        name: &str,
        msg_type: &str,
        content: &str,
    ) -> Result<SendOk, LarkError> {
        let hook = self.webhooks.get(name).ok_or_else(|| LarkError {
            class: ErrorClass::Config,
            http_status: None,
            code: None,
            msg: format!("no webhook named '{name}' is configured"),
            log_id: None,
            retry_after: None,
        })?;
        let content: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        let attempt = || async {
            let signature = hook.secret.as_ref().map(|s| {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                (ts, super::webhook::sign(s.expose(), ts))
            });
            let body = super::webhook::body(msg_type, &content, signature);
            read_response(self.http.post(&hook.url).json(&body)).await
        };
        let result = match attempt().await {
            Err(e) if e.code == Some(19021) && hook.secret.is_some() => attempt().await,
            other => other,
        };
        result.map(|(_, log_id)| SendOk {
            message_id: String::new(),
            chat_id: format!("webhook:{name}"),
            log_id,
        })
    }

    /// `POST /open-apis/im/v1/messages?receive_id_type=…` (lark-api.md §2.1).
    pub async fn send_message(
        &self,
        receive_id_type: &str,
        receive_id: &str,
        msg_type: &str,
        content: &str,
        uuid: &str,
    ) -> Result<SendOk, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let body = SendBody {
            receive_id,
            msg_type,
            content,
            uuid,
        };
        let url = self
            .send_urls
            .iter()
            .find(|(t, _)| *t == receive_id_type)
            .map(|(_, u)| u.clone());
        let (resp, log_id) = self
            .authorized(|token| {
                let req = match &url {
                    Some(u) => self.http.post(u.clone()),
                    // An id type without a pre-parsed URL (or a base URL that did not parse):
                    // build it per request, and let reqwest report a bad URL.
                    None => self
                        .http
                        .post(format!("{}/open-apis/im/v1/messages", self.base_url))
                        .query(&[("receive_id_type", receive_id_type)]),
                };
                req.bearer_auth(token.expose()).json(&body)
            })
            .await?;
        let data = resp.get("data");
        let field = |k: &str| {
            data.and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(SendOk {
            message_id: field("message_id"),
            chat_id: field("chat_id"),
            log_id,
        })
    }

    /// `PATCH /open-apis/im/v1/messages/{message_id}/urgent_{kind}` (lark-api.md §6): buzzes
    /// `user_ids` (open_ids) about a message this app sent. Returns the ids Lark skipped
    /// (`invalid_user_id_list`: not in the message's chat); all invalid is an error (230001).
    pub async fn urgent(
        &self,
        message_id: &str,
        kind: &str,
        user_ids: &[String],
    ) -> Result<Vec<String>, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let url = format!(
            "{}/open-apis/im/v1/messages/{message_id}/urgent_{kind}",
            self.base_url
        );
        let body = json!({ "user_id_list": user_ids });
        let (resp, _) = self
            .authorized(|token| {
                self.http
                    .patch(&url)
                    .query(&[("user_id_type", "open_id")])
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await?;
        Ok(resp
            .pointer("/data/invalid_user_id_list")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /open-apis/contact/v3/users/batch_get_id` for mobiles (lark-api.md §5). Returns the
    /// open_id of each mobile Lark knows; a missing `user_id` means not found or not visible.
    pub async fn open_ids_by_mobile(
        &self,
        mobiles: &[String],
    ) -> Result<Vec<(String, Option<String>)>, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let url = format!("{}/open-apis/contact/v3/users/batch_get_id", self.base_url);
        let body = json!({ "mobiles": mobiles });
        let (resp, _) = self
            .authorized(|token| {
                self.http
                    .post(&url)
                    .query(&[("user_id_type", "open_id")])
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await?;
        let list = resp
            .pointer("/data/user_list")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(mobiles
            .iter()
            .map(|m| {
                // §5: entries may echo the number in another form; match on digits.
                let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                let found = list.iter().find_map(|u| {
                    let mobile = u.get("mobile").and_then(Value::as_str)?;
                    if digits(mobile) != digits(m) {
                        return None;
                    }
                    u.get("user_id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                });
                (m.clone(), found)
            })
            .collect())
    }

    /// Runs a request with the cached tenant token. On a token error (R-tok) the token is evicted,
    /// a new one minted and the request sent once more; a second token error is fatal, because
    /// the credentials or the app are wrong, not the token (lark-api.md §1.6 recommendation).
    async fn authorized<F>(&self, build: F) -> Result<(Value, Option<String>), LarkError>
    where
        F: Fn(&Secret) -> reqwest::RequestBuilder,
    {
        let token = self.tokens.get().await?;
        match read_response(build(&token)).await {
            Err(e) if e.class == ErrorClass::Token => {
                tracing::info!(code = ?e.code, "tenant token rejected; evicting it and retrying once");
                self.tokens.evict(&token);
                let token = self.tokens.get().await?;
                read_response(build(&token)).await.map_err(|e| {
                    if e.class == ErrorClass::Token {
                        e.with_class(ErrorClass::Fatal)
                    } else {
                        e
                    }
                })
            }
            other => other,
        }
    }
}

/// A record addressed a user or chat, but only webhooks are configured: that record's problem
/// (dead-lettered), not the connector's.
fn no_app() -> LarkError {
    LarkError {
        class: ErrorClass::Config,
        http_status: None,
        code: None,
        msg: "this message is for a user or chat, which needs a Lark app (lark.app.id and lark.app.secret); only custom-bot webhooks are configured".into(),
        log_id: None,
        retry_after: None,
    }
}

/// Sends a request and reads a Lark answer: `Ok` only for a 2xx with `code` 0.
pub(crate) async fn read_response(
    req: reqwest::RequestBuilder,
) -> Result<(Value, Option<String>), LarkError> {
    let resp = req.send().await.map_err(|e| {
        // No status: connection refused, reset, timeout. All transient (R-bo).
        let what = if e.is_timeout() {
            "request timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        crate::telemetry::lark_response("transport");
        LarkError::transport(format!("{what}: {}", without_url(&e)))
    })?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let log_id = header("x-tt-logid").or_else(|| header("x-request-id"));
    let ratelimit_reset = header("x-ogw-ratelimit-reset");
    let text = resp.text().await.map_err(|e| {
        LarkError::transport(format!("reading the response failed: {}", without_url(&e)))
    })?;
    let result = read_answer(Answer {
        status,
        body: &text,
        log_id: log_id.as_deref(),
        ratelimit_reset: ratelimit_reset.as_deref(),
    });
    match &result {
        Ok(_) => crate::telemetry::lark_response("0"),
        Err(LarkError { code: Some(c), .. }) => crate::telemetry::lark_response(&c.to_string()),
        Err(_) => crate::telemetry::lark_response(&format!("http_{status}")),
    }
    result
}

/// reqwest errors print the URL; ours carry no secret, but keep messages short and stable.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
    }
    s
}
