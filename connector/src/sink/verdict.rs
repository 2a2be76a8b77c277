//! What Lark's final answer means for a message: done, dead-letter it, or stop the connector.
//!
//! [`super::settle`] carries a verdict out (the buzz, the result record, the DLQ write, the
//! offset); the decision itself is pure, like [`super::backpressure`]'s step, so which answers stop
//! the connector and what a dead letter says (its class, reason and coordinates) are unit-tested
//! here without Kafka or Lark. The answer is final: `delivery::send` has already retried what it
//! may, and `exhausted` says whether retries ran out.

use std::fmt::Display;

use crate::delivery::DeliveryFailure;
use crate::dlq::{DeadLetter, DeadLetterClass, Stage};

/// What to do with a message after Lark's final answer to one call (its send, or its buzz).
#[derive(Debug)]
pub(super) enum Verdict<T> {
    /// Lark took it; `T` is what the answer carried.
    Done(T),
    /// An app-wide configuration error (bad credentials, missing scope, bot disabled): every
    /// message would fail, so the connector stops and the record stays uncommitted. The reason.
    Stop(String),
    /// Refused for good, or retries ran out: this dead letter is written (and the message is
    /// finished once the broker acknowledged it).
    DeadLetter(DeadLetter),
}

/// Where the message a dead letter concerns sits, as the dead letter names it. Built only when
/// there is a dead letter to write.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    /// The message's index in its record.
    pub index: usize,
    /// The receiver as the logs spell it (`Receiver::describe`).
    pub receiver: String,
    pub uuid: String,
}

/// The verdict on a send (or, for a keyed message, its update or recall, `T` being what it came
/// to): delivered, or dead-lettered with the failure's class (`-exhausted`
/// when retries ran out on a retryable answer), or stop.
pub(super) fn sent<T>(
    answer: Result<T, DeliveryFailure>,
    subject: impl FnOnce() -> Subject,
) -> Verdict<T> {
    match answer {
        Ok(done) => Verdict::Done(done),
        Err(f) if f.is_fatal() => Verdict::Stop(f.to_string()),
        Err(f) => Verdict::DeadLetter(dead_letter(subject(), send_class(&f), f.to_string(), f)),
    }
}

/// The verdict on the buzz after a delivered message (`kind`: app, sms or phone): done with the
/// users Lark skipped, or dead-lettered as `urgent-<class>` with a reason that names the
/// delivered message (so nobody resends it), or stop.
pub(super) fn buzzed(
    answer: Result<Vec<String>, DeliveryFailure>,
    message_id: &str,
    kind: impl Display,
    subject: impl FnOnce() -> Subject,
) -> Verdict<Vec<String>> {
    match answer {
        Ok(skipped) => Verdict::Done(skipped),
        Err(f) if f.is_fatal() => Verdict::Stop(f.to_string()),
        Err(f) => {
            let reason = format!(
                "message {message_id} was delivered, but the urgent_{kind} buzz failed: {f}"
            );
            Verdict::DeadLetter(dead_letter(subject(), urgent_class(&f), reason, f))
        }
    }
}

/// A failed send's class: the answer's label, with `-exhausted` when retries ran out.
fn send_class(f: &DeliveryFailure) -> DeadLetterClass {
    if f.exhausted {
        DeadLetterClass::Exhausted(f.error.class)
    } else {
        DeadLetterClass::Lark(f.error.class)
    }
}

/// A failed buzz's class: `urgent-` and the answer's label, exhausted or not.
fn urgent_class(f: &DeliveryFailure) -> DeadLetterClass {
    DeadLetterClass::Urgent(f.error.class)
}

fn dead_letter(
    at: Subject,
    class: DeadLetterClass,
    reason: String,
    f: DeliveryFailure,
) -> DeadLetter {
    DeadLetter {
        stage: Stage::Deliver,
        class,
        reason,
        message_index: Some(at.index),
        receiver: Some(at.receiver),
        uuid: Some(at.uuid),
        attempts: f.attempts,
        lark: Some(f.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Delivered;
    use crate::lark::{ErrorClass, LarkError, SendOk};

    fn subject() -> Subject {
        Subject {
            index: 2,
            receiver: "chat_id:oc_ops".into(),
            uuid: "u-1".into(),
        }
    }

    /// A subject that must not be built: the verdict writes no dead letter.
    fn unused() -> Subject {
        panic!("a subject was built for a verdict without a dead letter")
    }

    fn failure(class: ErrorClass, code: i64, attempts: u32, exhausted: bool) -> DeliveryFailure {
        DeliveryFailure {
            error: LarkError {
                class,
                http_status: Some(400),
                code: Some(code),
                msg: "refused".into(),
                log_id: None,
                retry_after: None,
            },
            attempts,
            exhausted,
        }
    }

    fn delivered() -> Delivered {
        Delivered {
            ok: SendOk {
                message_id: "om_1".into(),
                chat_id: "oc_ops".into(),
                log_id: None,
            },
            attempts: 1,
        }
    }

    fn letter<T>(v: Verdict<T>) -> DeadLetter {
        match v {
            Verdict::DeadLetter(dl) => dl,
            Verdict::Done(_) => panic!("expected a dead letter, got done"),
            Verdict::Stop(r) => panic!("expected a dead letter, got stop: {r}"),
        }
    }

    /// The dead letter of a send that failed with `class` and `code`.
    fn send_letter(class: ErrorClass, code: i64, attempts: u32, exhausted: bool) -> DeadLetter {
        letter(sent::<Delivered>(
            Err(failure(class, code, attempts, exhausted)),
            subject,
        ))
    }

    #[test]
    fn an_accepted_send_is_done_and_names_no_subject() {
        let v = sent(Ok(delivered()), unused);
        assert!(matches!(v, Verdict::Done(d) if d.ok.message_id == "om_1"));
    }

    #[test]
    fn a_permanent_refusal_is_dead_lettered_with_its_class_and_coordinates() {
        let dl = send_letter(ErrorClass::Record, 230002, 1, false);
        assert_eq!(dl.class.to_string(), "F-rec");
        assert!(matches!(dl.stage, Stage::Deliver));
        assert_eq!(dl.message_index, Some(2));
        assert_eq!(dl.receiver.as_deref(), Some("chat_id:oc_ops"));
        assert_eq!(dl.uuid.as_deref(), Some("u-1"));
        assert_eq!(dl.attempts, 1);
        assert_eq!(dl.lark.as_ref().and_then(|e| e.code), Some(230002));
        assert_eq!(
            dl.reason,
            "Lark code 230002 (HTTP 400): refused (after 1 attempt)"
        );
    }

    #[test]
    fn retries_that_ran_out_are_dead_lettered_as_exhausted() {
        let dl = send_letter(ErrorClass::Backoff, 1500, 6, true);
        assert_eq!(dl.class.to_string(), "R-bo-exhausted");
        assert_eq!(dl.attempts, 6);
        let dl = send_letter(ErrorClass::RateLimited, 99991400, 6, true);
        assert_eq!(dl.class.to_string(), "R-hdr-exhausted");
    }

    #[test]
    fn an_app_wide_configuration_error_stops_instead_of_dead_lettering() {
        let f = failure(ErrorClass::Fatal, 10003, 1, false);
        let reason = f.to_string();
        assert!(
            matches!(sent::<Delivered>(Err(f.clone()), unused), Verdict::Stop(r) if r == reason)
        );
        let v = buzzed(Err(f), "om_1", "app", unused);
        assert!(matches!(v, Verdict::Stop(r) if r == reason));
    }

    #[test]
    fn a_buzz_is_done_with_the_users_lark_skipped() {
        let v = buzzed(Ok(vec!["ou_x".into()]), "om_1", "sms", unused);
        assert!(matches!(v, Verdict::Done(s) if s == ["ou_x"]));
    }

    #[test]
    fn a_failed_buzz_is_dead_lettered_naming_the_delivered_message() {
        let f = failure(ErrorClass::Record, 230001, 1, false);
        let failure_text = f.to_string();
        let dl = letter(buzzed(Err(f), "om_1", "phone", subject));
        assert_eq!(dl.class.to_string(), "urgent-F-rec");
        assert_eq!(
            dl.reason,
            format!("message om_1 was delivered, but the urgent_phone buzz failed: {failure_text}")
        );
        assert_eq!(
            (dl.message_index, dl.uuid.as_deref()),
            (Some(2), Some("u-1"))
        );
        // Exhausted or not, a buzz's class has no `-exhausted`.
        let dl = letter(buzzed(
            Err(failure(ErrorClass::Backoff, 1500, 6, true)),
            "om_1",
            "app",
            subject,
        ));
        assert_eq!(dl.class.to_string(), "urgent-R-bo");
    }
}
