//! One record value → the messages it carries, each a valid [`Envelope`] or the dead letter
//! saying why not.
//!
//! [`record`] is the sink's whole per-record work before delivery: decode, the transforms (given
//! by the caller), split, validate. It is the one composition of those steps: the sink
//! ([`crate::transform`] runs it on a blocking thread with the chain), `lark-sink transform test`,
//! the bad-input corpus (`tests/corpus/`) and the fuzz targets (`fuzz/`) all call it, so they run
//! exactly the code the sink runs. It is free of Kafka, HTTP and the script engines: the transform
//! is a closure.

use std::convert::Infallible;
use std::fmt::Display;

use serde_json::Value;

use super::decode::{decode_value, split_envelopes, DecodeError};
use super::validate::EnvelopeValidator;
use super::Envelope;
use crate::dlq::{clip, DeadLetter, DeadLetterClass, MAX_REASON_BYTES};

/// The most messages one record may carry (an array record, or what its transforms returned).
///
/// Without a bound one record of a few hundred kilobytes (`[1,1,1,...]`) fans out into hundreds of
/// thousands of messages: each invalid one is a dead letter carrying the whole record value (a
/// DLQ write amplification of gigabytes), and the valid ones bypass `buffer.max.messages`, because
/// a record is dispatched whole. A thousand is Lark's app quota for a minute (lark-api.md §4): a
/// record that large already takes a minute to send. A record above the bound is dead-lettered
/// whole, once.
pub const MAX_MESSAGES_PER_RECORD: usize = 1000;

/// A record after decode, transform and validation.
#[derive(Debug)]
pub enum Prepared {
    /// The record failed as a whole (decode or transform, or too many messages).
    Failed(DeadLetter),
    /// Its messages, each valid or with the reason it is not. Empty = dropped by a transform.
    Messages(Vec<Result<Envelope, Box<DeadLetter>>>),
}

impl Prepared {
    /// The first reason this record (or one of its messages) would be dead-lettered.
    pub fn first_failure(&self) -> Option<&DeadLetter> {
        match self {
            Prepared::Failed(dl) => Some(dl),
            Prepared::Messages(m) => m.iter().find_map(|r| r.as_ref().err().map(|b| &**b)),
        }
    }

    /// Every dead letter this record produces, in message order.
    pub fn failures(&self) -> Vec<&DeadLetter> {
        match self {
            Prepared::Failed(dl) => vec![dl],
            Prepared::Messages(m) => m
                .iter()
                .filter_map(|r| r.as_ref().err().map(|b| &**b))
                .collect(),
        }
    }
}

/// A dead letter for a failure before delivery (no receiver, uuid or Lark answer yet). The reason
/// is clipped to [`MAX_REASON_BYTES`]: it may quote the record.
pub fn dead_letter(class: DeadLetterClass, reason: String) -> DeadLetter {
    DeadLetter {
        stage: class.stage(),
        class,
        reason: clip(&reason, MAX_REASON_BYTES),
        message_index: None,
        receiver: None,
        uuid: None,
        lark: None,
        attempts: 0,
    }
}

/// The transform step's type when there is none (see [`untransformed`]).
pub type NoTransform = fn(Value) -> Result<Vec<Value>, Infallible>;

/// One record: decode its value (`VALUE_CONVERTER`), hand it to `transform` if there is one (its
/// error dead-letters the record, `TRANSFORMATION`; no output drops it), split what comes out into
/// messages and validate each.
pub fn record<F, E>(
    validator: &EnvelopeValidator,
    bytes: Option<&[u8]>,
    transform: Option<F>,
) -> Prepared
where
    F: FnOnce(Value) -> Result<Vec<Value>, E>,
    E: Display,
{
    let value = match decode_value(bytes) {
        Ok(v) => v,
        Err(e) => return Prepared::Failed(decode_failure(&e)),
    };
    let Some(transform) = transform else {
        return messages(validator, vec![value], false);
    };
    match transform(value) {
        Ok(outputs) => messages(validator, outputs, true),
        Err(e) => Prepared::Failed(transform_failure(&e)),
    }
}

/// A record without transforms: decode, split, validate.
pub fn untransformed(validator: &EnvelopeValidator, bytes: Option<&[u8]>) -> Prepared {
    record(validator, bytes, None::<NoTransform>)
}

fn decode_failure(e: &DecodeError) -> DeadLetter {
    dead_letter(DeadLetterClass::Decode, e.to_string())
}

/// The dead letter of a record whose transforms failed (`TRANSFORMATION`), with their error.
pub fn transform_failure(e: &impl Display) -> DeadLetter {
    dead_letter(DeadLetterClass::Transform, e.to_string())
}
/// Split and validate: every value (the decoded record, or each transform output) → its envelopes
/// → each validated. `transformed` decides whose fault a value of the wrong shape is: the producer's
/// (`VALUE_CONVERTER`) or the transform's (`TRANSFORMATION`).
fn messages(validator: &EnvelopeValidator, outputs: Vec<Value>, transformed: bool) -> Prepared {
    let whole = |e: String| {
        if transformed {
            dead_letter(DeadLetterClass::Transform, format!("transform output: {e}"))
        } else {
            dead_letter(DeadLetterClass::Decode, e)
        }
    };
    // Flatten every output into messages; `indexed` says whether paths need an element index.
    let mut messages: Vec<Value> = Vec::new();
    let mut indexed = outputs.len() > 1;
    for out in outputs {
        match split_envelopes(out) {
            Ok((envs, is_array)) => {
                indexed |= is_array;
                messages.extend(envs);
            }
            Err(e) => return Prepared::Failed(whole(e.to_string())),
        }
        if messages.len() > MAX_MESSAGES_PER_RECORD {
            break;
        }
    }
    if messages.len() > MAX_MESSAGES_PER_RECORD {
        return Prepared::Failed(whole(format!(
            "record holds more than {MAX_MESSAGES_PER_RECORD} messages ({}{}); split it into smaller records",
            messages.len(),
            if transformed { " or more" } else { "" }
        )));
    }
    Prepared::Messages(
        messages
            .iter()
            .enumerate()
            .map(|(index, m)| {
                validator
                    .validate(m, indexed.then_some(index))
                    .map_err(|e| {
                        let mut dl = dead_letter(DeadLetterClass::Schema, e.to_string());
                        dl.message_index = Some(index);
                        Box::new(dl)
                    })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::Stage;

    fn v() -> EnvelopeValidator {
        EnvelopeValidator::new().unwrap()
    }

    #[test]
    fn a_record_with_too_many_messages_is_one_dead_letter() {
        let ok = r#"{"receiveId":"ou_a","content":{"text":"x"}}"#;
        let at_limit = format!("[{}]", vec![ok; MAX_MESSAGES_PER_RECORD].join(","));
        match untransformed(&v(), Some(at_limit.as_bytes())) {
            Prepared::Messages(m) => {
                assert_eq!(m.len(), MAX_MESSAGES_PER_RECORD);
                assert!(m.iter().all(Result::is_ok));
            }
            other => panic!("{other:?}"),
        }
        let over = format!("[{}]", vec!["1"; MAX_MESSAGES_PER_RECORD + 1].join(","));
        let p = untransformed(&v(), Some(over.as_bytes()));
        let failures = p.failures();
        assert_eq!(failures.len(), 1, "{p:?}");
        assert_eq!(failures[0].stage, Stage::Decode);
        assert!(
            failures[0]
                .reason
                .contains("more than 1000 messages (1001)"),
            "{}",
            failures[0].reason
        );
        // From a transform, the fault is the transform's.
        let outputs: Result<Vec<Value>, String> = Ok(vec![
            Value::Array(vec![Value::Null; 600]),
            Value::Array(vec![Value::Null; 600]),
        ]);
        let p = record(&v(), Some(b"{}"), Some(|_| outputs));
        assert_eq!(p.failures()[0].stage, Stage::Transform, "{p:?}");
    }
}
