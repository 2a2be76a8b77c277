//! Delivering one message: resolve the receiver, wait for permission, send (or reply, when the
//! envelope has `replyTo`), retry what is retryable, report the rest.
//!
//! Retries use `backon` (the maintained successor of `backoff`, which RUSTSEC-2025-0012 flags as
//! unmaintained): exponential backoff with jitter, bounded by `errors.retry.timeout`, and a
//! server-given `x-ogw-ratelimit-reset` replaces the computed wait (lark-api.md §4). Every attempt
//! carries the same uuid, so a retry after a lost response is never delivered twice (§2.2).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::limits::RateLimits;
use crate::envelope::{Envelope, IdType, Receiver, Urgent};
use crate::lark::{ErrorClass, LarkClient, LarkError, SendOk, Throttle, UserDirectory};

/// How to retry, from the `errors.retry.*` keys (config builds it from `LarkConfig`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// The `errors.retry.*` defaults: 200 ms doubling to 60 s, for at most 5 minutes.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
            timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// A message that could not be delivered, with how hard we tried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (after {attempts} attempt{})", if *.attempts == 1 { "" } else { "s" })]
pub struct DeliveryFailure {
    pub error: LarkError,
    pub attempts: u32,
    /// True when retries ran out on a retryable error (as opposed to a permanent answer).
    pub exhausted: bool,
}

pub struct Delivered {
    pub ok: SendOk,
    pub attempts: u32,
}

/// How long a receiver or the app is held back after a throttle answer that names no time.
pub(super) const THROTTLE_HOLD: Duration = Duration::from_secs(1);

/// Resolves, waits for permission, sends and retries one message.
pub async fn deliver(
    client: &LarkClient,
    directory: &UserDirectory,
    limits: &RateLimits,
    policy: &RetryPolicy,
    envelope: &Envelope,
    uuid: &str,
) -> Result<Delivered, DeliveryFailure> {
    let send = || async {
        // Phones, and emails with `lark.email.resolve`, become open_ids first (lark-api.md §5);
        // a failed look-up is retried or reported like a failed send.
        let open_id = |id| Receiver::Id {
            id_type: IdType::OpenId,
            id,
        };
        let receiver = match &envelope.receiver {
            Receiver::Id {
                id_type: IdType::Email,
                id,
            } if directory.resolves_email() => open_id(directory.open_id_by_email(id).await?),
            Receiver::Phone(p) => open_id(directory.open_id_by_mobile(p).await?),
            Receiver::Webhook(name) => {
                // Webhooks have their own quota (5/s, 100/min per bot) and no uuid (§8).
                let permit = limits.acquire_webhook(name).await;
                let result = client
                    .send_webhook(name, &envelope.msg_type, &envelope.content)
                    .await;
                match webhook_hold(&result) {
                    Some(hold) => permit.hold(hold),
                    None => permit.sent(),
                }
                return result;
            }
            other => other.clone(),
        };
        let permit = limits.acquire(&receiver.rate_key()).await;
        // Replies and sends share the app quota and the retry path (lark-api.md §2.5, §4).
        let result = match &envelope.reply {
            Some(r) => {
                client
                    .reply_message(
                        &r.message_id,
                        &envelope.msg_type,
                        &envelope.content,
                        r.in_thread,
                        uuid,
                    )
                    .await
            }
            None => {
                let (id_type, id) = match &receiver {
                    Receiver::Id { id_type, id } => (id_type.as_str(), id.as_str()),
                    // Not reached: validation pairs `Parent` with a reply, and phones and
                    // webhooks were resolved or sent above.
                    Receiver::Parent(id) | Receiver::Phone(id) | Receiver::Webhook(id) => {
                        ("reply_to", id.as_str())
                    }
                };
                client
                    .send_message(id_type, id, &envelope.msg_type, &envelope.content, uuid)
                    .await
            }
        };
        // Throttle answers slow the matching scope down for the time Lark names (lark-api.md §3-4).
        match result.as_ref().err().and_then(LarkError::throttle) {
            Some(Throttle::App(reset)) => {
                limits.hold_app(reset.unwrap_or(THROTTLE_HOLD));
                permit.sent();
            }
            Some(Throttle::Receiver) => permit.hold(THROTTLE_HOLD),
            None => permit.sent(),
        }
        result
    };
    let context = || format!("receiver={} uuid={uuid}", envelope.receiver.describe());
    with_retries(policy, "delivery", context, send)
        .await
        .map(|(ok, attempts)| Delivered { ok, attempts })
}

/// How long a webhook's bot is held back after `result`, if at all. A bot has one quota of its own,
/// so any throttle answer (11232, or 9499 "too many request", lark-api.md §8) holds that bot back;
/// a 9499 "Bad Request…" is the record's fault and holds nothing.
fn webhook_hold<T>(result: &Result<T, LarkError>) -> Option<Duration> {
    result
        .as_ref()
        .err()
        .and_then(LarkError::throttle)
        .map(|_| THROTTLE_HOLD)
}

/// Runs `op` until it succeeds, fails permanently, or `errors.retry.timeout` runs out; the one
/// retry mechanism for every Lark call the pipeline makes. Returns the result and the attempts.
/// `context` names the call in retry warnings; it is only formatted when one is logged.
///
/// `errors.retry.timeout` is wall-clock time since the first attempt (as in Kafka Connect),
/// checked before every retry, so time spent waiting on slow responses counts too.
pub(super) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    context: impl Fn() -> String,
    mut op: F,
) -> Result<(T, u32), DeliveryFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LarkError>>,
{
    let attempts = AtomicU32::new(0);
    let counted = || {
        attempts.fetch_add(1, Ordering::Relaxed);
        op()
    };
    let started = std::time::Instant::now();
    let (timeout, max_delay) = (policy.timeout, policy.max_delay);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.initial)
        .with_max_delay(max_delay)
        .with_jitter()
        .without_max_times();
    let result = counted
        .retry(backoff)
        .when(|e: &LarkError| {
            e.class.is_retryable() && timeout.is_none_or(|t| started.elapsed() < t)
        })
        // A server-given reset replaces the computed wait; backon's jitter adds up to 100% on top
        // of the capped delay, so clamp again to keep `errors.retry.delay.max.ms` a true ceiling.
        .adjust(|e: &LarkError, next| next.map(|d| e.retry_after.unwrap_or(d).min(max_delay)))
        .notify(|e: &LarkError, wait: Duration| {
            crate::telemetry::retry(e.class.label());
            tracing::warn!(
                context = context(),
                class = e.class.label(),
                wait_ms = wait.as_millis() as u64,
                "{what} failed, retrying: {e}"
            );
        })
        .await;
    let attempts = attempts.load(Ordering::Relaxed);
    result
        .map(|ok| (ok, attempts))
        .map_err(|error| DeliveryFailure {
            exhausted: error.class.is_retryable(),
            error,
            attempts,
        })
}

/// Buzzes the users of `urgent` about a delivered message (lark-api.md §6), retrying only
/// transient failures with the same policy; urgent-specific refusals (230001 all invalid, 230012,
/// 230023 too many unread, 230024 quota) are permanent and reported, never retried forever.
/// Returns the ids Lark skipped as not in the chat.
pub async fn buzz(
    client: &LarkClient,
    policy: &RetryPolicy,
    message_id: &str,
    urgent: &Urgent,
) -> Result<Vec<String>, DeliveryFailure> {
    let call = || client.urgent(message_id, urgent.kind.as_str(), &urgent.user_ids);
    let context = || format!("message_id={message_id} kind={}", urgent.kind);
    with_retries(policy, "urgent buzz", context, call)
        .await
        .map(|(skipped, _)| skipped)
}

impl DeliveryFailure {
    /// True when the connector must stop rather than dead-letter (app-wide configuration errors).
    pub fn is_fatal(&self) -> bool {
        self.error.class == ErrorClass::Fatal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lark::classify::{read_answer, Answer};

    fn webhook_answer(status: u16, body: &str) -> Result<(), LarkError> {
        read_answer(Answer {
            status,
            body,
            log_id: None,
            ratelimit_reset: None,
        })
        .map(|_| ())
    }

    #[test]
    fn a_webhook_throttle_holds_the_bot_back() {
        // §8: 11232, and 9499 "too many request" with HTTP 200 or 400, are the bot's throttle.
        for (status, body) in [
            (200, r#"{"code":11232,"msg":"rate limit"}"#),
            (200, r#"{"code":9499,"msg":"too many request"}"#),
            (400, r#"{"code":9499,"msg":"too many request"}"#),
        ] {
            assert_eq!(
                webhook_hold(&webhook_answer(status, body)),
                Some(THROTTLE_HOLD),
                "{status} {body}"
            );
        }
        // A malformed body, a bad signature, a success: the bot is not held.
        for (status, body) in [
            (200, r#"{"code":9499,"msg":"Bad Request"}"#),
            (
                400,
                r#"{"code":9499,"msg":"Bad Request: fail to parse content"}"#,
            ),
            (200, r#"{"code":19021,"msg":"sign match fail"}"#),
            (200, r#"{"code":0,"msg":"success"}"#),
        ] {
            assert_eq!(
                webhook_hold(&webhook_answer(status, body)),
                None,
                "{status} {body}"
            );
        }
    }
}
