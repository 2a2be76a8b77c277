//! Changing a message already in Lark: update it in place (a card by PATCH, text and post by PUT)
//! or recall it (DELETE), lifecycle doc §1.1-1.3 (docs/lark-api.md).
//!
//! The same rules as a send: wait for permission first ([`RateLimits::acquire_update`]: the
//! message's own 4/s gate, its receiver's spacing, the app quotas), retry what is retryable with
//! `with_retries`, and let throttle answers hold back the scope they name. What a refusal
//! means for the key (send a new message instead, dead-letter, stop) is decided by the caller
//! (`sink/keyed.rs`); this file only reports the answer, in Lark's classes, where a message that
//! cannot be changed any more is `F-msg` ([`ErrorClass::Message`](crate::lark::ErrorClass::Message)).

use super::limits::RateLimits;
use super::send::{with_retries, DeliveryFailure, RetryPolicy, THROTTLE_HOLD};
use crate::envelope::Envelope;
use crate::lark::{LarkClient, LarkError, Recalled, Throttle, Updated};

/// Updates message `message_id` with `envelope`'s content: PATCH for `interactive`, PUT (an edit)
/// for `text` and `post`. Returns the answer and the attempts it took.
pub async fn update(
    client: &LarkClient,
    limits: &RateLimits,
    policy: &RetryPolicy,
    envelope: &Envelope,
    message_id: &str,
) -> Result<(Updated, u32), DeliveryFailure> {
    let rate_key = envelope.receiver.rate_key();
    let call = || async {
        let permit = limits.acquire_update(&rate_key, message_id).await;
        let result = if envelope.msg_type == "interactive" {
            client.update_card(message_id, &envelope.content).await
        } else {
            client
                .edit_message(message_id, &envelope.msg_type, &envelope.content)
                .await
        };
        settle_permit(limits, permit, &result);
        result
    };
    let context = || format!("message_id={message_id} msg_type={}", envelope.msg_type);
    with_retries(policy, "update", context, call).await
}

/// Recalls message `message_id` (of a receiver keyed `rate_key`). A message already recalled or
/// deleted in Lark counts as recalled ([`Recalled::AlreadyGone`]).
pub async fn recall(
    client: &LarkClient,
    limits: &RateLimits,
    policy: &RetryPolicy,
    rate_key: &str,
    message_id: &str,
) -> Result<(Recalled, u32), DeliveryFailure> {
    let call = || async {
        let permit = limits.acquire_update(rate_key, message_id).await;
        let result = client.recall_message(message_id).await;
        settle_permit(limits, permit, &result);
        result
    };
    let context = || format!("message_id={message_id}");
    with_retries(policy, "recall", context, call).await
}

/// A throttle answer holds back what it names (the app, or this receiver and message); anything
/// else just records the call.
fn settle_permit<T>(
    limits: &RateLimits,
    permit: super::limits::Permit,
    result: &Result<T, LarkError>,
) {
    match result.as_ref().err().and_then(LarkError::throttle) {
        Some(Throttle::App(reset)) => {
            limits.hold_app(reset.unwrap_or(THROTTLE_HOLD));
            permit.sent();
        }
        Some(_) => permit.hold(THROTTLE_HOLD),
        None => permit.sent(),
    }
}
