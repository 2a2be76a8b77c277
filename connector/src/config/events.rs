//! `lark.events.*`: the way back, Lark's events and card button clicks into a Kafka topic
//! (docs/user-guide.md "Receiving events and clicks"). Off unless `lark.events.topic` is set.

use std::time::Duration;

use super::keys::Keys;
use super::{key_err, ConfigError};

/// How long a written event is remembered, so that Lark's redeliveries are written once, unless
/// `lark.events.dedup.window.ms` says otherwise: Lark redelivers an unanswered event after 15 s,
/// 5 min, 1 h and 6 h (lark-api.md §9), about 7 h in all, and redelivers now and then even after
/// an answer; 12 h covers the whole schedule.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(12 * 3600);

/// The most events the dedup window remembers (past it the oldest are forgotten: such a
/// redelivery is merely written again).
pub const DEDUP_CAPACITY: usize = 100_000;

/// How the events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsMode {
    /// The long connection the official SDKs use (no public endpoint needed).
    Websocket,
}

/// `lark.events.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `lark.events.topic`: where each event is written.
    pub topic: String,
    /// `lark.events.mode`.
    pub mode: EventsMode,
    /// `lark.events.dedup.window.ms`.
    pub dedup_window: Duration,
    /// `lark.events.card.toast`: what the clicking user sees after a card button click (none: the
    /// card answers `{}`).
    pub card_toast: Option<String>,
}

impl EventsConfig {
    /// `None` without `lark.events.topic` (the other keys then are an error).
    pub(super) fn parse(keys: &Keys<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(topic) = keys
            .get("lark.events.topic")
            .filter(|t| !t.trim().is_empty())
        else {
            for k in [
                "lark.events.mode",
                "lark.events.dedup.window.ms",
                "lark.events.card.toast",
            ] {
                if keys.get(k).is_some() {
                    return Err(key_err(k, "needs lark.events.topic"));
                }
            }
            return Ok(None);
        };
        let mode =
            match keys.get("lark.events.mode").unwrap_or("websocket") {
                "websocket" => EventsMode::Websocket,
                "http" => return Err(key_err(
                    "lark.events.mode",
                    "http (signed callbacks to a listener) is not implemented yet; use websocket",
                )),
                other => {
                    return Err(key_err(
                        "lark.events.mode",
                        format!("must be websocket, not '{other}'"),
                    ))
                }
            };
        let dedup_window = keys.ms("lark.events.dedup.window.ms", DEFAULT_DEDUP_WINDOW)?;
        let card_toast = keys
            .get("lark.events.card.toast")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(Some(EventsConfig {
            topic: topic.trim().to_string(),
            mode,
            dedup_window,
            card_toast,
        }))
    }
}
