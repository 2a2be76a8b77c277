//! `storm.*`: storm control per receiver (docs/user-guide.md "Storms"). All off by default: with
//! none of these keys the sink behaves exactly as without storm control.

use std::time::Duration;

use super::keys::Keys;
use super::{key_err, ConfigError};

/// How many summaries a digest lists unless `storm.digest.max.items` says otherwise.
pub const DEFAULT_DIGEST_MAX_ITEMS: usize = 10;

/// The most a digest may list: a card of 50 one-line summaries stays far below Lark's 30 KB
/// card limit (lark-api.md §7) even with long lines.
pub const MAX_DIGEST_ITEMS: usize = 50;

/// `storm.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StormConfig {
    /// `storm.dedup.window.ms` (0 = off): a message identical to one sent to the same receiver
    /// within this window (same `messageKey`, type and content) is not sent again.
    pub dedup_window: Duration,
    /// `storm.digest.after` (0 = off): when more than this many messages wait for one receiver,
    /// the waiting `normal` and `low` ones are merged into one digest message.
    pub digest_after: usize,
    /// `storm.digest.max.items`: how many of the merged messages a digest lists (the rest are
    /// counted).
    pub digest_max_items: usize,
}

impl StormConfig {
    pub(super) fn parse(keys: &Keys<'_>) -> Result<Self, ConfigError> {
        let dedup_window = keys.ms("storm.dedup.window.ms", Duration::ZERO)?;
        let digest_after = keys.count::<usize>("storm.digest.after", 0)?;
        let digest_max_items =
            keys.count::<usize>("storm.digest.max.items", DEFAULT_DIGEST_MAX_ITEMS)?;
        if !(1..=MAX_DIGEST_ITEMS).contains(&digest_max_items) {
            return Err(key_err(
                "storm.digest.max.items",
                format!("must be between 1 and {MAX_DIGEST_ITEMS}"),
            ));
        }
        if digest_after == 0 && keys.get("storm.digest.max.items").is_some() {
            return Err(key_err(
                "storm.digest.max.items",
                "needs storm.digest.after (digests are off)",
            ));
        }
        Ok(StormConfig {
            dedup_window,
            digest_after,
            digest_max_items,
        })
    }

    /// Whether digests are on.
    pub fn digests(&self) -> bool {
        self.digest_after > 0
    }
}
