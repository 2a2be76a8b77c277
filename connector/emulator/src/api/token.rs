//! `POST /open-apis/auth/v3/tenant_access_token/internal` (lark-api.md §1).
//!
//! The success body is flat (no `data` wrapper) and says `"msg":"ok"`, unlike every other
//! endpoint; clients that parse it with the generic envelope break here, which is worth
//! emulating exactly.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use super::{finish, prologue, AppState};
use crate::errors::{self, ApiError};
use crate::faults::FaultTarget;
use crate::reply::Dialect;
use crate::state::Shared;

pub(crate) async fn issue(State(shared): State<AppState>, body: Bytes) -> Response {
    let log_id = match prologue(&shared, FaultTarget::Token, Dialect::OpenApi).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let result = mint(&shared, &body);
    finish(&shared, &log_id, result, Dialect::OpenApi)
}

fn mint(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    // A malformed body or a missing field is reported like an unknown app id: 10003
    // `invalid param` (§1.4).
    let creds: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::new(errors::TOKEN_INVALID_PARAM))?;
    let field = |k: &str| creds.get(k).and_then(Value::as_str).unwrap_or_default();
    let (app_id, secret) = (field("app_id"), field("app_secret"));
    let app = shared
        .dir
        .app(app_id)
        .ok_or_else(|| ApiError::new(errors::TOKEN_INVALID_PARAM))?;
    if app.app_secret != secret {
        return Err(errors::TOKEN_SECRET_INVALID.into());
    }
    let mut s = shared.lock();
    let issued = s.tokens.issue(app_id, Instant::now(), shared.token_ttl);
    if issued.fresh {
        s.stats.tokens_issued += 1;
    }
    Ok(json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": issued.token,
        "expire": issued.expire_secs,
    }))
}
