//! The admin HTTP server: health and readiness probes, Prometheus metrics, and the subset of the
//! Kafka Connect REST API an operator already scripts against (connector list, config, status,
//! pause, resume, restart, config validation), with Connect's response shapes.
//!
//! With `admin.token` set, every endpoint but the probes requires `Authorization: Bearer <token>`;
//! probes stay open because orchestrators call them without credentials.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};

use crate::config::{ConnectorConfig, KNOWN_KEYS};
use crate::control::Control;
use crate::secret::{mask_config_value, Secret};

/// The Connect plugin name lark-sink answers to (any name is accepted for validation).
pub const PLUGIN: &str = "LarkSinkConnector";

#[derive(Clone)]
pub struct AdminState {
    pub name: String,
    /// The config as given, with literal secrets masked (placeholders like `${env:X}` kept).
    pub config: BTreeMap<String, String>,
    pub control: Arc<Control>,
    pub metrics: Option<PrometheusHandle>,
    pub token: Option<Secret>,
    pub worker_id: String,
}

/// Connect's error body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": status.as_u16(), "message": message.into()})),
    )
        .into_response()
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/connectors", get(list))
        .route("/connectors/{name}", get(info))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connector-plugins/{plugin}/config/validate", put(validate))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(protected)
        .with_state(state)
}

/// Serves the admin API on an already bound listener until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("admin API stopped: {e}");
    }
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Compare in constant time: the token guards pause/restart.
        let ok = given.is_some_and(|g| {
            g.len() == token.expose().len()
                && g.bytes()
                    .zip(token.expose().bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (admin.token)",
            );
        }
    }
    next.run(req).await
}

async fn ready(State(s): State<AdminState>) -> Response {
    let st = s.control.status();
    let body = json!({"broker": st.broker_ready, "lark": st.lark_ready, "state": st.state});
    let code = if s.control.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    match &s.metrics {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "metrics recorder not installed"),
    }
}

async fn list(State(s): State<AdminState>) -> Json<Value> {
    Json(json!([s.name]))
}

/// Connect's 404 for a connector this worker does not run.
fn unknown(s: &AdminState, name: &str) -> Option<Response> {
    (name != s.name).then(|| error(StatusCode::NOT_FOUND, format!("Connector {name} not found")))
}

async fn info(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(e) = unknown(&s, &name) {
        return e;
    }
    Json(json!({
        "name": s.name,
        "config": s.config,
        "tasks": [{"connector": s.name, "task": 0}],
        "type": "sink",
    }))
    .into_response()
}

async fn status(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(e) = unknown(&s, &name) {
        return e;
    }
    let st = s.control.status();
    let mut task = json!({"id": 0, "state": st.state, "worker_id": s.worker_id});
    if let Some(err) = &st.last_error {
        task["trace"] = json!(err);
    }
    Json(json!({
        "name": s.name,
        "connector": {"state": st.state, "worker_id": s.worker_id},
        "tasks": [task],
        "type": "sink",
        // lark-sink's own detail, beside Connect's fields.
        "lark_sink": {
            "assigned_partitions": st.assigned_partitions,
            "last_error": st.last_error,
            "broker_ready": st.broker_ready,
            "lark_ready": st.lark_ready,
        },
    }))
    .into_response()
}

async fn pause(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(e) = unknown(&s, &name) {
        return e;
    }
    tracing::info!("paused through the admin API");
    s.control.pause();
    StatusCode::ACCEPTED.into_response()
}

async fn resume(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(e) = unknown(&s, &name) {
        return e;
    }
    tracing::info!("resumed through the admin API");
    s.control.resume();
    StatusCode::ACCEPTED.into_response()
}

async fn restart(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Some(e) = unknown(&s, &name) {
        return e;
    }
    tracing::info!("restart requested through the admin API");
    s.control.request_restart();
    StatusCode::NO_CONTENT.into_response()
}

/// `PUT /connector-plugins/{plugin}/config/validate`: Connect's `ConfigInfos` shape, one entry per
/// key given, with the error (if any) on the key it concerns. Values are echoed masked exactly as
/// `GET /connectors/{name}` shows them ([`mask_config_value`]).
async fn validate(Path(plugin): Path<String>, body: Option<Json<Value>>) -> Response {
    let Some(Json(Value::Object(map))) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object of config keys",
        );
    };
    let config: BTreeMap<String, String> = map
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    let name = config
        .get("name")
        .cloned()
        .unwrap_or_else(|| "validate".into());
    let result = ConnectorConfig::from_json(&json!({"name": name, "config": map}));
    let (err_key, err_msg) = match &result {
        Ok(_) => (None, None),
        Err(crate::config::ConfigError::Key { key, message }) => {
            (Some(key.clone()), Some(message.clone()))
        }
        Err(other) => (Some("name".to_string()), Some(other.to_string())),
    };
    let mut keys: Vec<String> = config.keys().cloned().collect();
    if let Some(k) = &err_key {
        if !keys.contains(k) {
            keys.push(k.clone()); // e.g. a missing required key
        }
    }
    let configs: Vec<Value> = keys
        .iter()
        .map(|k| {
            let errors: Vec<&str> = if err_key.as_deref() == Some(k.as_str()) {
                err_msg.iter().map(String::as_str).collect()
            } else {
                Vec::new()
            };
            let value = config.get(k).map(|v| mask_config_value(k, v));
            json!({
                "definition": {
                    "name": k,
                    "type": "STRING",
                    "required": false,
                    "importance": "MEDIUM",
                    "documentation": if KNOWN_KEYS.contains(&k.as_str()) || k.starts_with("kafka.") || k.starts_with("transforms") { "see docs/configuration.md" } else { "" },
                    "group": k.split('.').next().unwrap_or(""),
                    "order": -1,
                    "dependents": [],
                },
                "value": {
                    "name": k,
                    "value": value,
                    "recommended_values": [],
                    "errors": errors,
                    "visible": true,
                },
            })
        })
        .collect();
    Json(json!({
        "name": plugin,
        "error_count": usize::from(err_key.is_some()),
        "groups": [],
        "configs": configs,
    }))
    .into_response()
}

/// Connect's `worker_id`: `host:port`, with the machine's (or pod's) hostname, so replicas
/// listening on `0.0.0.0:8083` are told apart.
pub fn worker_id(addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| addr.ip().to_string());
    format!("{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/config/validate` answer, parsed, and each key's echoed value.
    async fn validate_answer(body: Value) -> (String, BTreeMap<String, Value>) {
        let resp = validate(Path(PLUGIN.to_string()), Some(Json(body))).await;
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("the answer is in memory");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let answer: Value = serde_json::from_str(&text).expect("the answer is JSON");
        let values = answer["configs"]
            .as_array()
            .expect("configs is an array")
            .iter()
            .map(|c| {
                let v = &c["value"];
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v["value"].clone(),
                )
            })
            .collect();
        (text, values)
    }

    #[tokio::test]
    async fn config_validate_never_echoes_secrets() {
        let key_pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
        let body = json!({
            "name": "alerts",
            "topics": "alerts",
            "kafka.bootstrap.servers": "127.0.0.1:9092",
            "lark.app.id": "cli_x",
            "lark.app.secret": "app-s3cret",
            "kafka.ssl.key.pem": key_pem,
            "kafka.ssl.keystore.password": "keystore-pw",
            "kafka.sasl.oauthbearer.client.secret": "oidc-s3cret",
            "kafka.sasl.oauthbearer.assertion.private.key.passphrase": "assertion-pass",
            "admin.token": "admin-t0ken",
            "lark.webhooks.ops.token": "hook-t0ken",
            "lark.webhooks.ops.secret": "hook-s3cret",
            "kafka.sasl.password": "${env:LARK_SINK_TEST_UNSET_KAFKA_PASSWORD}",
        });
        let (text, values) = validate_answer(body).await;
        assert_eq!(values["kafka.ssl.key.pem"], "***", "{text}");
        for leaked in [
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "app-s3cret",
            "keystore-pw",
            "oidc-s3cret",
            "assertion-pass",
            "admin-t0ken",
            "hook-t0ken",
            "hook-s3cret",
        ] {
            assert!(!text.contains(leaked), "{leaked} echoed: {text}");
        }
        assert_eq!(values["kafka.bootstrap.servers"], "127.0.0.1:9092");
        assert_eq!(values["lark.app.id"], "cli_x");
        assert_eq!(
            values["kafka.sasl.password"], "${env:LARK_SINK_TEST_UNSET_KAFKA_PASSWORD}",
            "a reference is shown as written, as GET /connectors/{{name}} shows it"
        );
    }
}
