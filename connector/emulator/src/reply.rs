//! Turning results and faults into HTTP responses with Lark's envelope (lark-api.md §2.3, §12.1).
//!
//! Every OpenAPI reply carries an `X-Tt-Logid` header; error bodies repeat that id in
//! `error.log_id` next to a `troubleshooter` link, as the real platform does, so clients that
//! log the id for support tickets can be tested. Keeping this in one place means handlers only
//! ever produce a `serde_json::Value` or an [`ApiError`].

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::errors::{self, ApiError};
use crate::faults::Fault;

pub const LOG_ID_HEADER: &str = "x-tt-logid";
const JSON_CT: &str = "application/json; charset=utf-8";
const TEXT_CT: &str = "text/plain; charset=utf-8";

/// Which envelope flavour an endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenApi,
    /// Custom-bot webhooks also put `"data":{}` into error bodies (§8).
    Webhook,
}

/// `json: false` = plain text (gateway-style 5xx bodies).
fn build(status: u16, log_id: &str, json: bool, body: String) -> Response {
    // Statuses come from scripted faults; an invalid one (e.g. 1000) degrades to 500.
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    let ct = if json { JSON_CT } else { TEXT_CT };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Ok(v) = HeaderValue::from_str(log_id) {
        headers.insert(HeaderName::from_static(LOG_ID_HEADER), v);
    }
    resp
}

/// HTTP 200 with a complete success body (the caller decides its shape: flat for the token
/// endpoint, `data`-wrapped elsewhere, legacy fields for webhooks).
pub fn ok(log_id: &str, body: &Value) -> Response {
    build(200, log_id, true, body.to_string())
}

/// `{"code":0,"msg":"success","data":…}` (§2.3).
pub fn success(data: Value) -> Value {
    json!({ "code": 0, "msg": "success", "data": data })
}

/// The error envelope for `e`, with its status and extra headers.
pub fn error(log_id: &str, e: &ApiError, dialect: Dialect) -> Response {
    let mut err = json!({
        "log_id": log_id,
        "troubleshooter": format!(
            "排查建议查看(Troubleshooting suggestions): https://open.feishu.cn/search?code={}&log_id={}&from=openapi",
            e.code, log_id
        ),
    });
    if let (Some((key, value)), Some(obj)) = (&e.detail, err.as_object_mut()) {
        obj.insert((*key).to_string(), value.clone());
    }
    let mut body = json!({ "code": e.code, "msg": e.msg, "error": err });
    if let (Dialect::Webhook, Some(obj)) = (dialect, body.as_object_mut()) {
        obj.insert("data".into(), json!({}));
    }
    let mut resp = build(e.status, log_id, true, body.to_string());
    for (name, value) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

/// The response for an injected `Status` or `Code` fault (`Slow` never gets here), plus the
/// business code it carries, if any, for the stats.
pub fn fault(log_id: &str, f: &Fault, dialect: Dialect) -> (Response, Option<i64>) {
    match f {
        Fault::Status { status } => {
            let text = match status {
                502 => Some("502 Bad Gateway"),
                503 => Some("503 Service Unavailable: no healthy upstream"),
                504 => Some("504 Gateway Timeout: upstream request timeout"),
                _ => None,
            };
            match text {
                Some(t) => (build(*status, log_id, false, t.to_string()), None),
                None => {
                    let mut e = ApiError::new(errors::INTERNAL);
                    e.status = *status;
                    (error(log_id, &e, dialect), Some(e.code))
                }
            }
        }
        Fault::Code {
            http_status,
            code,
            msg,
            ratelimit_reset_secs,
        } => {
            let mut e = ApiError {
                status: *http_status,
                code: *code,
                msg: msg.clone(),
                headers: Vec::new(),
                detail: None,
            };
            if let Some(reset) = ratelimit_reset_secs {
                // The limit value is informational; 50 is the send API's per-second tier (§4).
                e = e
                    .with_header("x-ogw-ratelimit-limit", 50)
                    .with_header("x-ogw-ratelimit-reset", reset);
            }
            (error(log_id, &e, dialect), Some(*code))
        }
        // `prologue` sleeps on Slow faults and never renders them; answering 500 keeps this
        // total without a panic should that ever change.
        Fault::Slow { .. } | Fault::LateAnswer { .. } => (
            build(500, log_id, false, "slow fault rendered".into()),
            None,
        ),
    }
}
