//! The Lark calls lark-sink makes (send, reply, webhook push, urgent, batch_get_id), over one
//! shared HTTP connection pool.
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

/// One entry of a `batch_get_id` answer (lark-api.md §5). `user_id` (an open_id here) is `None`
/// when Lark knows no such user, or the user is not visible to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdEntry {
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub user_id: Option<String>,
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

/// The reply body (lark-api.md §2.5): no `receive_id`; the parent is in the path.
#[derive(serde::Serialize)]
struct ReplyBody<'a> {
    content: &'a str,
    msg_type: &'a str,
    reply_in_thread: bool,
    uuid: &'a str,
}

impl LarkClient {
    pub fn new(cfg: &LarkConfig) -> Result<Self, reqwest::Error> {
        // TLS: reqwest's default stack (rustls, aws-lc-rs) verifies every certificate against the
        // system's roots (rustls-platform-verifier); `lark.tls.ca.file` adds roots, never
        // replaces or disables verification.
        let http = reqwest::Client::builder()
            .tls_certs_merge(cfg.tls_ca.iter().cloned())
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
        Ok(send_ok(&resp, log_id))
    }

    /// `POST /open-apis/im/v1/messages/{parent_id}/reply` (lark-api.md §2.5): the reply goes to the
    /// parent's chat; same uuid de-duplication as a send (§2.2). `parent_id` passed validation's
    /// `om_[0-9A-Za-z_-]+` pattern, so it is safe as a path segment.
    pub async fn reply_message(
        &self,
        parent_id: &str,
        msg_type: &str,
        content: &str,
        in_thread: bool,
        uuid: &str,
    ) -> Result<SendOk, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let url = format!(
            "{}/open-apis/im/v1/messages/{parent_id}/reply",
            self.base_url
        );
        let body = ReplyBody {
            content,
            msg_type,
            reply_in_thread: in_thread,
            uuid,
        };
        let (resp, log_id) = self
            .authorized(|token| self.http.post(&url).bearer_auth(token.expose()).json(&body))
            .await?;
        Ok(send_ok(&resp, log_id))
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

    /// `POST /open-apis/contact/v3/users/batch_get_id?user_id_type=open_id` (lark-api.md §5):
    /// at most 50 emails and 50 mobiles per call. Returns Lark's `user_list` as it came; the
    /// caller matches entries to what it asked ([`super::directory`] does it case-insensitively),
    /// because entries may echo another spelling, lack `user_id` (not found or not visible) or,
    /// possibly, be missing. A 99991672 (missing scope) names the scope the look-up needs.
    pub async fn batch_get_id(
        &self,
        emails: &[String],
        mobiles: &[String],
    ) -> Result<Vec<UserIdEntry>, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let url = format!("{}/open-apis/contact/v3/users/batch_get_id", self.base_url);
        let body = json!({ "emails": emails, "mobiles": mobiles, "include_resigned": false });
        let (resp, _) = self
            .authorized(|token| {
                self.http
                    .post(&url)
                    .query(&[("user_id_type", "open_id")])
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await
            .map_err(|mut e| {
                if e.code == Some(99991672) {
                    e.msg.push_str(
                        " (looking users up by phone or email needs the app scope contact:user.id:readonly)",
                    );
                }
                e
            })?;
        let text = |u: &Value, k: &str| {
            u.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(resp
            .pointer("/data/user_list")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|u| UserIdEntry {
                        email: text(u, "email"),
                        mobile: text(u, "mobile"),
                        user_id: text(u, "user_id"),
                    })
                    .collect()
            })
            .unwrap_or_default())
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

/// The message fields of a send or reply success body (lark-api.md §2.3).
fn send_ok(resp: &Value, log_id: Option<String>) -> SendOk {
    let data = resp.get("data");
    let field = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    SendOk {
        message_id: field("message_id"),
        chat_id: field("chat_id"),
        log_id,
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
        crate::telemetry::lark_response("transport");
        // A rejected certificate will be rejected again: a configuration error, not retried.
        if let Some(why) = tls_rejection(&e) {
            let host = e.url().and_then(|u| u.host_str()).unwrap_or("the server");
            return LarkError {
                class: ErrorClass::Fatal,
                http_status: None,
                code: None,
                msg: format!(
                    "TLS certificate of {host} rejected ({why}); if it is signed by a private CA \
                     or a TLS-intercepting proxy, set lark.tls.ca.file to that CA's PEM certificate"
                ),
                log_id: None,
                retry_after: None,
            };
        }
        // No status: connection refused, reset, timeout. All transient (R-bo).
        let what = if e.is_timeout() {
            "request timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
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
/// The reason when a request failed because the server's certificate was rejected (unknown
/// issuer, wrong name, expired, ...). rustls reports a `rustls::Error` a few sources down
/// reqwest's error, inside the `std::io::Error` of the TLS stream and possibly boxed again on the
/// way up, so each link is tried as the rustls error, as an `io::Error` wrapping it, and by the
/// message rustls gives that error ("invalid peer certificate: ...").
fn tls_rejection(e: &reqwest::Error) -> Option<String> {
    fn rejected(t: &rustls::Error) -> bool {
        matches!(
            t,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>().filter(|t| rejected(t)) {
            return Some(t.to_string());
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .filter(|t| rejected(t))
        {
            return Some(t.to_string());
        }
        let text = err.to_string();
        if let Some(at) = text.find("invalid peer certificate") {
            return Some(text[at..].to_string());
        }
        cur = err.source();
    }
    None
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
    }
    s
}
