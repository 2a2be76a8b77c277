//! The dead-letter topic: where a record goes when it cannot be delivered, with the reason.
//!
//! The DLQ record keeps the original key, value and headers byte for byte, so it can be replayed
//! as is, and (with `errors.deadletterqueue.context.headers.enable`, on by default) adds
//! `__connect.errors.*` headers in Kafka Connect's naming, so existing Connect tooling reads them.
//! A write counts only once the broker acknowledged it (`acks=all`): the source offset is stored
//! after that, never before. Nothing secret is ever put in a header: reasons come from validation
//! and Lark answers, neither of which contains credentials or tokens.

use std::fmt;

use crate::lark::{ErrorClass, LarkError};

// The writer needs Kafka; the types below are shared with the pure checks (crate::envelope).
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
    /// Why, in one word: the `__connect.errors.class.name` header and the result's `class`.
    pub class: DeadLetterClass,
    pub reason: String,
    /// The message's index inside an array record, when the failure concerns one message.
    pub message_index: Option<usize>,
    pub receiver: Option<String>,
    pub uuid: Option<String>,
    pub lark: Option<LarkError>,
    pub attempts: u32,
}

/// Why a record or message is dead-lettered, in one short machine-readable word. Its
/// [`label`](Self::label) is the `__connect.errors.class.name` header, the result record's
/// `class` and the `class` label of `lark_sink_dead_letters_total`: operators filter and alert on
/// these strings, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterClass {
    /// The record value is not an envelope, or an array of them (`decode`).
    Decode,
    /// A transform failed, or returned something that is not envelopes (`transform`).
    Transform,
    /// A message failed validation (`schema`).
    Schema,
    /// Lark refused the message for good: the answer's class label (`F-rec`, `F-cfg`, …).
    Lark(ErrorClass),
    /// Retries ran out on a retryable answer: its label and `-exhausted` (`R-bo-exhausted`).
    Exhausted(ErrorClass),
    /// The message was delivered, but buzzing its users failed: `urgent-` and the label of the
    /// failure, exhausted or not (`urgent-F-rec`).
    Urgent(ErrorClass),
}

impl DeadLetterClass {
    /// The class as the DLQ header, the result record and the metric spell it.
    pub fn label(self) -> &'static str {
        use ErrorClass::*;
        match self {
            DeadLetterClass::Decode => "decode",
            DeadLetterClass::Transform => "transform",
            DeadLetterClass::Schema => "schema",
            DeadLetterClass::Lark(c) => c.label(),
            DeadLetterClass::Exhausted(c) => match c {
                RateLimited => "R-hdr-exhausted",
                Backoff => "R-bo-exhausted",
                Token => "R-tok-exhausted",
                Config => "F-cfg-exhausted",
                Record => "F-rec-exhausted",
                Message => "F-msg-exhausted",
                Fatal => "F-cfg-fatal-exhausted",
            },
            DeadLetterClass::Urgent(c) => match c {
                RateLimited => "urgent-R-hdr",
                Backoff => "urgent-R-bo",
                Token => "urgent-R-tok",
                Config => "urgent-F-cfg",
                Record => "urgent-F-rec",
                Message => "urgent-F-msg",
                Fatal => "urgent-F-cfg-fatal",
            },
        }
    }

    /// The stage a failure of this class happens in.
    pub fn stage(self) -> Stage {
        match self {
            DeadLetterClass::Decode => Stage::Decode,
            DeadLetterClass::Transform => Stage::Transform,
            DeadLetterClass::Schema => Stage::Validate,
            DeadLetterClass::Lark(_)
            | DeadLetterClass::Exhausted(_)
            | DeadLetterClass::Urgent(_) => Stage::Deliver,
        }
    }
}

impl fmt::Display for DeadLetterClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
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
    fn dead_letter_classes_keep_their_header_strings() {
        use ErrorClass::*;
        assert_eq!(DeadLetterClass::Decode.label(), "decode");
        assert_eq!(DeadLetterClass::Transform.label(), "transform");
        assert_eq!(DeadLetterClass::Schema.label(), "schema");
        assert_eq!(
            DeadLetterClass::Exhausted(Backoff).label(),
            "R-bo-exhausted"
        );
        assert_eq!(DeadLetterClass::Urgent(Record).label(), "urgent-F-rec");
        // The strings the sink built with format! before the enum existed, for every class.
        for c in [RateLimited, Backoff, Token, Config, Record, Message, Fatal] {
            assert_eq!(DeadLetterClass::Lark(c).label(), c.label());
            let exhausted = format!("{}-exhausted", c.label());
            assert_eq!(DeadLetterClass::Exhausted(c).label(), exhausted);
            assert_eq!(
                DeadLetterClass::Urgent(c).label(),
                format!("urgent-{}", c.label())
            );
        }
    }

    #[test]
    fn clip_keeps_short_reasons_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(100); // 200 bytes
        let c = clip(&long, 101);
        assert!(c.len() <= 101 && c.ends_with("… (140 more bytes)"), "{c}");
        assert!(clip(&"x".repeat(1 << 20), MAX_REASON_BYTES).len() <= MAX_REASON_BYTES);
    }
}
