//! The Lark calls lark-sink makes (send, reply, webhook push, urgent, batch_get_id, and the
//! lifecycle calls: card update, edit, recall), over one shared HTTP connection pool.
//!
//! Every call goes through `read_response` (`http.rs`), which sends the request and hands the
//! answer to `read_answer`: the JSON body of a success or a classified [`LarkError`]; the token
//! rule of lark-api.md §1.6 (evict, re-mint, retry once, then give up as a configuration error)
//! lives in `LarkClient::authorized`. The lifecycle calls re-read their errors with their own
//! code table ([`LarkError::for_call`], lark-api.md §14).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::classify::{recall_gone, Call, ErrorClass, LarkError};
use super::http::http_client;
use super::token::TokenCache;
use super::webhook::WebhookConfig;
use crate::secret::Secret;

use super::http::read_response;

/// What the client needs to reach Lark: the part of `lark.*` it reads, built by `config` (so
/// `lark` never reads the connector's config).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Empty when no app is configured (a webhook-only connector).
    pub app_id: String,
    pub app_secret: Secret,
    /// The Open Platform's base URL (`https://open.feishu.cn`, no trailing `/`).
    pub base_url: String,
    /// The longest one request may take (`lark.request.timeout.ms`).
    pub request_timeout: Duration,
    /// Refresh the tenant token this long before Lark says it expires.
    pub token_refresh_margin: Duration,
    /// Custom-bot webhooks by name.
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Extra trusted roots (`lark.tls.ca.file`), added to the system's.
    pub tls_ca: Vec<reqwest::Certificate>,
}

/// A delivered message, as Lark reported it (lark-api.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOk {
    pub message_id: String,
    pub chat_id: String,
    pub log_id: Option<String>,
}

/// A card update or an edit Lark accepted (lark-api.md §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The answer's `X-Tt-Logid`, for support tickets and the result record.
    pub log_id: Option<String>,
}

/// What a recall achieved (lark-api.md §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recalled {
    /// Lark recalled the message now.
    Recalled,
    /// The message was recalled (230011) or deleted (230110) already: the recall's goal holds,
    /// so it is no error (a retried recall whose first attempt landed ends here too).
    AlreadyGone,
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

/// The card update body (lark-api.md §14): the card JSON as a string, no `msg_type`.
#[derive(serde::Serialize)]
struct UpdateCardBody<'a> {
    content: &'a str,
}

/// The edit body (lark-api.md §14): `text` or `post` and its content string.
#[derive(serde::Serialize)]
struct EditBody<'a> {
    msg_type: &'a str,
    content: &'a str,
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
    /// The client for `cfg` (a [`ClientConfig`], or the connector's `&LarkConfig`, which config
    /// turns into one).
    pub fn new(cfg: impl Into<ClientConfig>) -> Result<Self, reqwest::Error> {
        let cfg: ClientConfig = cfg.into();
        let http = http_client(cfg.request_timeout, &cfg.tls_ca)?;
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
            has_app: !cfg.app_id.is_empty(),
            base_url: cfg.base_url,
            send_urls,
            tokens,
            webhooks: cfg.webhooks,
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
    /// with a non-zero `code` on failure, which `read_response` classifies like any Lark code.
    /// A 19021 (signature or clock skew) is re-signed and sent once more, as the spec advises.
    pub async fn send_webhook(
        &self,
        name: &str,
        msg_type: &str,
        content: &str,
    ) -> Result<SendOk, LarkError> {
        let hook = self.webhooks.get(name).ok_or_else(|| {
            LarkError::local(
                ErrorClass::Config,
                format!("no webhook named '{name}' is configured"),
            )
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

    /// `PATCH /open-apis/im/v1/messages/{message_id}` (lark-api.md §14): replaces the card of a
    /// message this app sent (`update_multi: true`, at most 14 days old, 5 updates/s per
    /// message). Errors are classified for [`Call::UpdateCard`]: F-msg when this message can no
    /// longer be updated but a new one can be sent.
    pub async fn update_card(&self, message_id: &str, content: &str) -> Result<Updated, LarkError> {
        let url = self.message_url(message_id)?;
        let body = UpdateCardBody { content };
        let (_, log_id) = self
            .authorized(|token| {
                self.http
                    .patch(&url)
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await
            .map_err(|e| e.for_call(Call::UpdateCard))?;
        Ok(Updated { log_id })
    }

    /// `PUT /open-apis/im/v1/messages/{message_id}` (lark-api.md §14): edits a text or post
    /// message this app sent (same `msg_type`, at most 20 edits). Errors are classified for
    /// [`Call::Edit`]. A retry after a lost answer may spend a second edit (§14).
    pub async fn edit_message(
        &self,
        message_id: &str,
        msg_type: &str,
        content: &str,
    ) -> Result<Updated, LarkError> {
        let url = self.message_url(message_id)?;
        let body = EditBody { msg_type, content };
        let (_, log_id) = self
            .authorized(|token| self.http.put(&url).bearer_auth(token.expose()).json(&body))
            .await
            .map_err(|e| e.for_call(Call::Edit))?;
        Ok(Updated { log_id })
    }

    /// `DELETE /open-apis/im/v1/messages/{message_id}` (lark-api.md §14): recalls a message this
    /// app sent. A message recalled or deleted already is [`Recalled::AlreadyGone`], not an
    /// error; other errors are classified for [`Call::Recall`].
    pub async fn recall_message(&self, message_id: &str) -> Result<Recalled, LarkError> {
        let url = self.message_url(message_id)?;
        match self
            .authorized(|token| self.http.delete(&url).bearer_auth(token.expose()))
            .await
        {
            Ok(_) => Ok(Recalled::Recalled),
            Err(e) if e.code.is_some_and(recall_gone) && e.http_status.is_some() => {
                Ok(Recalled::AlreadyGone)
            }
            Err(e) => Err(e.for_call(Call::Recall)),
        }
    }

    /// `…/open-apis/im/v1/messages/{message_id}` for a lifecycle call. The id comes from the
    /// connector's state, not from validation, so it is checked here to be one path segment
    /// (`om_` ids are letters, digits, `_` and `-`): anything else is F-msg (this id cannot be
    /// changed; a new message can still be sent).
    fn message_url(&self, message_id: &str) -> Result<String, LarkError> {
        if !self.has_app {
            return Err(no_app());
        }
        let safe = !message_id.is_empty()
            && message_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !safe {
            return Err(LarkError::local(
                ErrorClass::Message,
                format!("'{message_id}' is not a Lark message id"),
            ));
        }
        Ok(format!(
            "{}/open-apis/im/v1/messages/{message_id}",
            self.base_url
        ))
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
    LarkError::local(
        ErrorClass::Config,
        "this message is for a user or chat, which needs a Lark app (lark.app.id and lark.app.secret); only custom-bot webhooks are configured",
    )
}
