//! The dead-letter topic: where a record goes when it cannot be delivered, with the reason.
//!
//! The DLQ record keeps the original key, value and headers byte for byte, so it can be replayed
//! as is, and (with `errors.deadletterqueue.context.headers.enable`, on by default) adds
//! `__connect.errors.*` headers in Kafka Connect's naming, so existing Connect tooling reads them.
//! A write counts only once the broker acknowledged it (`acks=all`): the source offset is stored
//! after that, never before. Nothing secret is ever put in a header: reasons come from validation
//! and Lark answers, neither of which contains credentials or tokens.

use crate::lark::LarkError;

// The writer needs Kafka; the types below are shared with the pure checks (crate::prepare).
#[cfg(feature = "runtime")]
mod writer;
#[cfg(feature = "runtime")]
pub use writer::{DeadLetterWriter, DlqError};

/// Where in the pipeline the record failed (`__connect.errors.stage`; Connect's own values are
/// KEY_CONVERTER, VALUE_CONVERTER, TRANSFORMATION, TASK_PUT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Transform,
    Validate,
    Deliver,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "VALUE_CONVERTER",
            Stage::Transform => "TRANSFORMATION",
            Stage::Validate => "VALIDATION",
            Stage::Deliver => "TASK_PUT",
        }
    }
}

/// Why one record (or one message of it) is dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stage: Stage,
    /// Short machine-readable class: `decode`, `transform`, `schema`, or the Lark class label.
    pub class: String,
    pub reason: String,
    /// The message's index inside an array record, when the failure concerns one message.
    pub message_index: Option<usize>,
    pub receiver: Option<String>,
    pub uuid: Option<String>,
    pub lark: Option<LarkError>,
    pub attempts: u32,
}

/// The longest reason a dead letter carries, in bytes (its `__connect.errors.exception.message`
/// header and its log line). Schema errors quote the offending value, which can be most of a 1 MB
/// record: quoted whole, it doubled the dead-letter record past the producer's 1 MB
/// `message.max.bytes`, and wrote a megabyte-long log line.
pub const MAX_REASON_BYTES: usize = 4096;

/// `reason` cut to at most `max` bytes (on a character boundary), saying how much was cut.
pub fn clip(reason: &str, max: usize) -> String {
    if reason.len() <= max {
        return reason.to_string();
    }
    let mut end = max.saturating_sub(40);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &reason[..end], reason.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_reasons_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(100); // 200 bytes
        let c = clip(&long, 101);
        assert!(c.len() <= 101 && c.ends_with("… (140 more bytes)"), "{c}");
        assert!(clip(&"x".repeat(1 << 20), MAX_REASON_BYTES).len() <= MAX_REASON_BYTES);
    }
}
