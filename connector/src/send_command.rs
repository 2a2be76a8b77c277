//! `lark-sink send`: one message from the command line, through the same validation, receiver
//! resolution, rate limits, retries and classification as the pipeline, with no Kafka involved.
//!
//! It is the quickest way to check that a config's app or webhook can reach someone, and a handy
//! tool for scripts. Each invocation uses a fresh idempotency uuid (its retries share it).

use serde_json::{json, Value};

use crate::config::ConnectorConfig;
use crate::delivery::{deliver, DeliveryFailure, RateLimits, RetryPolicy};
use crate::envelope::validate::{EnvelopeValidator, SchemaError, ValidationError};
use crate::lark::{LarkClient, LookupConfig, SendOk, UserDirectory};

#[derive(Debug, thiserror::Error)]
pub enum SendCommandError {
    #[error("--content is not JSON: {0}")]
    Content(serde_json::Error),
    #[error("the message is not valid: {0}")]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Lark refused the message [{class}]: {failure}", class = .failure.error.class.label())]
    Delivery {
        #[from]
        failure: DeliveryFailure,
    },
}

/// What to send; `content` is the content JSON (object) as text.
#[derive(Debug, Clone)]
pub struct SendArgs {
    pub receive_type: String,
    pub receive_id: String,
    pub content_type: String,
    pub content: String,
}

/// Validates and sends one message; returns what Lark answered.
pub async fn send(cfg: &ConnectorConfig, args: &SendArgs) -> Result<SendOk, SendCommandError> {
    let content: Value = serde_json::from_str(&args.content).map_err(SendCommandError::Content)?;
    let envelope = json!({
        "receiveType": args.receive_type,
        "receiveId": args.receive_id,
        "contentType": args.content_type,
        "content": content,
    });
    let validator = EnvelopeValidator::with_webhooks(cfg.lark.webhooks.keys().cloned().collect())?;
    let envelope = validator.validate(&envelope, None)?;
    let client = std::sync::Arc::new(LarkClient::new(&cfg.lark)?);
    let directory = UserDirectory::new(client.clone(), LookupConfig::from(&cfg.lark));
    let limits = RateLimits::new(cfg.rate);
    let uuid = format!("ls-cli-{:016x}", rand::random::<u64>());
    let done = deliver(
        &client,
        &directory,
        &limits,
        &RetryPolicy::from(&cfg.lark),
        &envelope,
        &uuid,
    )
    .await?;
    Ok(done.ok)
}
