//! `lark-sink send`: one message from the command line, through the same validation, receiver
//! resolution, rate limits, retries and classification as the pipeline, with no Kafka involved.
//!
//! It is the quickest way to check that a config's app or webhook can reach someone, and a handy
//! tool for scripts. Each invocation uses a fresh idempotency uuid (its retries share it).
//! With `--message-key` it sends or updates a keyed message like the pipeline does, keeping the
//! key in `lark.state.topic` (so it needs Kafka too).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::config::{ConfigError, ConnectorConfig};
use crate::delivery::keyed::{apply, now_ms, plan, Calls, Change, Landed, Op};
use crate::delivery::{deliver, DeliveryFailure, RateLimits, RetryPolicy};
use crate::envelope::validate::{EnvelopeValidator, SchemaError, ValidationError};
use crate::envelope::Envelope;
use crate::lark::{LarkClient, LookupConfig, SendOk, UserDirectory};
use crate::state::{Changelog, StateEntry, StateError, StateKey};

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
    /// The content JSON; `@FILE` reads it from a file, `-` from stdin. Not needed with --recall.
    #[arg(long, required_unless_present = "recall")]
    pub content: Option<String>,
    /// Send or update like the pipeline does for a record with this `messageKey`: the first
    /// send of a key posts a message, later ones update it in place (or replace it where Lark
    /// cannot). Needs lark.state.topic in the config.
    #[arg(long)]
    pub message_key: Option<String>,
    /// With --message-key: recall the key's message and forget the key.
    #[arg(long, requires = "message_key")]
    pub recall: bool,
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
    /// `--message-key` without `lark.state.topic` in the config.
    #[error("--message-key needs lark.state.topic in the config: the compacted topic that remembers which Lark message each key was sent as")]
    NoState,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What to send; `content` is the content JSON (object) as text.
#[derive(Debug, Clone)]
pub struct SendArgs {
    pub receive_type: String,
    pub receive_id: String,
    pub content_type: String,
    pub content: String,
    /// `--message-key`: send or update the key's message, like a keyed record.
    pub message_key: Option<String>,
    /// `--recall`: recall the key's message.
    pub recall: bool,
}

/// Loads the config, sends the message and prints its message_id, preceded by what happened
/// (`sent`, `updated`, `replaced`, `recalled`) with `--message-key` (the classified error is the
/// `Err`, which the binary prints before exiting 1).
pub async fn command(args: Args) -> Result<ExitCode, SendCommandError> {
    let cfg = ConnectorConfig::from_file(&args.config)?;
    let content = match &args.content {
        Some(c) => read_content(c)?,
        None => "{}".to_string(), // --recall: no content
    };
    let args = SendArgs {
        receive_type: args.receive_type,
        receive_id: args.receive_id,
        content_type: args.content_type,
        content,
        message_key: args.message_key,
        recall: args.recall,
    };
    let (op, ok) = send_or_update(&cfg, &args).await?;
    match (op, ok.message_id.is_empty()) {
        (None, true) => println!("sent ({})", ok.chat_id), // webhooks return no message_id
        (None, false) => println!("{}", ok.message_id),
        (Some(op), true) => println!("{}", op.as_str()), // a recall of a key with no message
        (Some(op), false) => println!("{} {}", op.as_str(), ok.message_id),
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
    send_or_update(cfg, args).await.map(|(_, ok)| ok)
}

/// Validates one message and sends it, or with `--message-key` sends or updates the key's
/// message; returns what the keyed message did (`None` without a key) and Lark's answer.
pub async fn send_or_update(
    cfg: &ConnectorConfig,
    args: &SendArgs,
) -> Result<(Option<Op>, SendOk), SendCommandError> {
    let content: Value = serde_json::from_str(&args.content).map_err(SendCommandError::Content)?;
    let mut envelope = json!({
        "receiveType": args.receive_type,
        "receiveId": args.receive_id,
        "contentType": args.content_type,
        "content": content,
    });
    if let Some(key) = &args.message_key {
        envelope["messageKey"] = json!(key);
        envelope["recall"] = json!(args.recall);
    }
    let validator = EnvelopeValidator::with_webhooks(cfg.lark.webhooks.keys().cloned().collect())?;
    let envelope = validator.validate(&envelope, None)?;
    let client = std::sync::Arc::new(LarkClient::new(&cfg.lark)?);
    let directory = UserDirectory::new(client.clone(), LookupConfig::from(&cfg.lark));
    let limits = RateLimits::new(cfg.rate);
    let policy = RetryPolicy::from(&cfg.lark);
    let uuid = format!("ls-cli-{:016x}", rand::random::<u64>());
    let calls = Calls {
        client: &client,
        directory: &directory,
        limits: &limits,
        policy: &policy,
    };
    if envelope.op.key().is_some() {
        let landed = keyed(cfg, &calls, &envelope, &uuid).await?;
        return Ok((Some(landed.op), landed.ok));
    }
    let done = deliver(&client, &directory, &limits, &policy, &envelope, &uuid).await?;
    Ok((None, done.ok))
}

/// A keyed message, as the pipeline handles it: the key's entry is looked up in the state topic
/// (every partition; the newest wins), the plan carried out, and the new entry written back where
/// it was found (a new key goes to partition 0: a running connector reads the state topic only
/// when partitions are assigned to it, so a key is best driven by one of the two).
async fn keyed(
    cfg: &ConnectorConfig,
    calls: &Calls<'_>,
    envelope: &Envelope,
    uuid: &str,
) -> Result<Landed, SendCommandError> {
    let state = cfg.state.as_ref().ok_or(SendCommandError::NoState)?;
    let changelog = Changelog::new(&cfg.kafka, state.topic.clone())?;
    changelog
        .ensure_topic(&cfg.kafka, state.partitions.unwrap_or(1))
        .await?;
    let key = StateKey {
        receiver: envelope.receiver.queue_key(),
        message_key: envelope.op.key().unwrap_or_default().to_string(),
    };
    let mut found: Option<(i32, StateEntry)> = None;
    let all: Vec<i32> = (0..changelog.partitions()).collect();
    for (p, restored) in changelog.restore_all(&all).await? {
        if let Some(e) = restored.entries.get(&key) {
            if found
                .as_ref()
                .is_none_or(|(_, f)| e.updated_ms >= f.updated_ms)
            {
                found = Some((p, e.clone()));
            }
        }
    }
    let partition = found.as_ref().map_or(0, |(p, _)| *p);
    let plan = plan(
        &envelope.op,
        &envelope.msg_type,
        found.map(|(_, e)| e),
        now_ms(),
    );
    let landed = apply(calls, envelope, uuid, plan, "lark-sink send").await?;
    match &landed.change {
        Change::Put(entry) => changelog.write(partition, &key, Some(entry)).await?,
        Change::Forget => changelog.write(partition, &key, None).await?,
        Change::Keep => {}
    }
    Ok(landed)
}
