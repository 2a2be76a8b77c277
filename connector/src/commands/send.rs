//! `lark-sink send`: one message from the command line, through the same validation, receiver
//! resolution, rate limits, retries and classification as the pipeline, with no Kafka involved.
//!
//! It is the quickest way to check that a config's app or webhook can reach someone, and a handy
//! tool for scripts. Each invocation uses a fresh idempotency uuid (its retries share it).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::config::{ConfigError, ConnectorConfig};
use crate::delivery::{deliver, DeliveryFailure, RateLimits, RetryPolicy};
use crate::envelope::validate::{EnvelopeValidator, SchemaError, ValidationError};
use crate::lark::{LarkClient, LookupConfig, SendOk, UserDirectory};

/// The command line of `lark-sink send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector config file (its lark.* keys are used).
    #[arg(long, short)]
    pub config: PathBuf,
    /// user, open_id, union_id, user_id, email, chat, phone or webhook.
    #[arg(long, default_value = "user")]
    pub receive_type: String,
    /// The receiver (an open_id, chat_id, email, phone number or webhook name).
    #[arg(long)]
    pub receive_id: String,
    /// The Lark msg_type.
    #[arg(long, default_value = "text")]
    pub content_type: String,
    /// The content JSON; `@FILE` reads it from a file, `-` from stdin.
    #[arg(long)]
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SendCommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--content @FILE` or `--content -` could not be read.
    #[error("reading {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
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

/// Loads the config, sends the message and prints its message_id (the classified error is the
/// `Err`, which the binary prints before exiting 1).
pub async fn command(args: Args) -> Result<ExitCode, SendCommandError> {
    let cfg = ConnectorConfig::from_file(&args.config)?;
    let content = read_content(&args.content)?;
    let args = SendArgs {
        receive_type: args.receive_type,
        receive_id: args.receive_id,
        content_type: args.content_type,
        content,
    };
    let ok = send(&cfg, &args).await?;
    if ok.message_id.is_empty() {
        println!("sent ({})", ok.chat_id); // webhooks return no message_id
    } else {
        println!("{}", ok.message_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--content`: inline JSON, `@FILE`, or `-` for stdin.
fn read_content(content: &str) -> Result<String, SendCommandError> {
    let read_error = |what: &str| {
        let what = what.to_string();
        move |source| SendCommandError::Read { what, source }
    };
    match content {
        "-" => std::io::read_to_string(std::io::stdin()).map_err(read_error("stdin")),
        c => match c.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(read_error(path)),
            None => Ok(c.to_string()),
        },
    }
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
