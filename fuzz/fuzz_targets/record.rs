//! Fuzz target `record`: any bytes as a Kafka record value, through `lark_sink::envelope::prepare`
//! (decode, split, validate: the sink's own `prepare::record` for a record without transforms).
//!
//! Beyond "no panic, no stack overflow, no hang", it checks what the sink relies on: a record
//! either fails whole with one dead letter or yields at most `MAX_MESSAGES_PER_RECORD` messages;
//! every dead letter has a stage that fits and a non-empty reason of at most `MAX_REASON_BYTES`; every valid envelope's content
//! is a JSON object within Lark's size limit. Seeds: tests/corpus/cases (scripts/fuzz.sh).
#![no_main]

use std::sync::OnceLock;

use lark_sink::dlq::{Stage, MAX_REASON_BYTES};
use lark_sink::envelope::prepare::{self, Prepared, MAX_MESSAGES_PER_RECORD};
use lark_sink::envelope::validate::{content_limit, EnvelopeValidator};
use lark_sink::envelope::Receiver;
use libfuzzer_sys::fuzz_target;

fn validator() -> &'static EnvelopeValidator {
    static V: OnceLock<EnvelopeValidator> = OnceLock::new();
    V.get_or_init(|| EnvelopeValidator::with_webhooks(vec!["ops".into()]).expect("schemas"))
}

fuzz_target!(|data: &[u8]| {
    match prepare::untransformed(validator(), Some(data)) {
        Prepared::Failed(dl) => {
            assert!(matches!(dl.stage, Stage::Decode), "{dl:?}");
            assert!(!dl.reason.is_empty() && dl.reason.len() <= MAX_REASON_BYTES);
        }
        Prepared::Messages(messages) => {
            assert!(!messages.is_empty() && messages.len() <= MAX_MESSAGES_PER_RECORD);
            for (i, m) in messages.iter().enumerate() {
                match m {
                    Ok(e) => {
                        let content: serde_json::Value =
                            serde_json::from_str(&e.content).expect("content is JSON");
                        assert!(content.is_object(), "{}", e.content);
                        if let Some(limit) = content_limit(&e.msg_type) {
                            assert!(e.content.len() <= limit);
                        }
                        match &e.receiver {
                            Receiver::Id { id, .. } | Receiver::Phone(id) => assert!(!id.is_empty()),
                            Receiver::Webhook(name) => assert_eq!(name, "ops"),
                            // A reply without receiveId is queued under its parent message.
                            Receiver::Parent(id) => {
                                assert!(id.starts_with("om_") && e.reply.is_some())
                            }
                        }
                    }
                    Err(dl) => {
                        assert!(matches!(dl.stage, Stage::Validate), "{dl:?}");
                        assert_eq!(dl.message_index, Some(i));
                        assert!(!dl.reason.is_empty() && dl.reason.len() <= MAX_REASON_BYTES);
                    }
                }
            }
        }
    }
});
