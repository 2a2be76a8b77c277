//! Unit tests of [`super`]: every code of the spec tables and of the lifecycle calls' tables,
//! in their own file so that `classify.rs` reads as the tables alone.

use super::*;
use ErrorClass::*;

#[test]
fn classes_follow_the_spec_table() {
    assert_eq!(classify(429, Some(99991400), ""), RateLimited);
    assert_eq!(classify(400, Some(99991400), ""), RateLimited);
    assert_eq!(classify(400, Some(230020), ""), Backoff);
    assert_eq!(classify(200, Some(11232), ""), Backoff);
    assert_eq!(classify(400, Some(99991663), ""), Token);
    assert_eq!(classify(400, Some(99991661), ""), Token);
    assert_eq!(classify(400, Some(99991671), ""), Token);
    assert_eq!(classify(400, Some(230002), ""), Record);
    assert_eq!(classify(400, Some(230013), ""), Record);
    assert_eq!(classify(400, Some(230025), ""), Record);
    assert_eq!(classify(400, Some(230006), ""), Fatal);
    assert_eq!(classify(400, Some(10014), ""), Fatal);
    assert_eq!(classify(429, Some(99991403), ""), Fatal);
    assert_eq!(classify(400, Some(230027), ""), Config);
    assert_eq!(
        classify(400, Some(11246), "Service Internal Error"),
        Backoff
    );
    assert_eq!(classify(400, Some(11246), "invalid at user"), Record);
}

#[test]
fn webhook_9499_is_read_by_code_and_msg() {
    // §8: "too many request" is a throttle (R-bo), seen with HTTP 400 as well as 200.
    for status in [200, 400] {
        for msg in ["too many request", "Too Many Requests"] {
            assert_eq!(classify(status, Some(9499), msg), Backoff, "{status} {msg}");
        }
        // §8: "Bad Request…" is a malformed body or one over the size limit (F-rec).
        for msg in ["Bad Request", "Bad Request: fail to parse content", ""] {
            assert_eq!(classify(status, Some(9499), msg), Record, "{status} {msg}");
        }
    }
    let e = answer(400, r#"{"code":9499,"msg":"too many request"}"#, None).unwrap_err();
    assert_eq!(
        (e.class, e.http_status, e.code),
        (Backoff, Some(400), Some(9499))
    );
    assert!(e.class.is_retryable());
    let e = answer(200, r#"{"code":9499,"msg":"Bad Request"}"#, None).unwrap_err();
    assert_eq!((e.class, e.http_status), (Record, Some(200)));
}

#[test]
fn reply_only_codes_are_dead_lettered() {
    // §2.5: recalled, invisible, no thread replies, aggregated, self-destructing parent.
    for code in [230011, 230050, 230071, 230072, 230111] {
        assert_eq!(classify(400, Some(code), ""), Record, "{code}");
    }
}

#[test]
fn status_decides_when_the_code_is_unknown_or_absent() {
    assert_eq!(classify(500, None, ""), Backoff);
    assert_eq!(classify(503, Some(123), ""), Backoff);
    assert_eq!(classify(504, None, ""), Backoff);
    assert_eq!(classify(429, None, ""), RateLimited);
    assert_eq!(classify(404, None, "<html>"), Fatal);
    // A Lark-shaped 404 / 405 (the emulator's answer to an unknown path) is no record error.
    assert_eq!(classify(404, Some(404), "404 page not found"), Fatal);
    assert_eq!(classify(405, Some(405), "method not allowed"), Fatal);
    assert_eq!(classify(400, Some(424242), ""), Record);
    assert!(RateLimited.is_retryable() && Backoff.is_retryable());
    assert!(!Token.is_retryable() && !Record.is_retryable() && !Fatal.is_retryable());
}

fn answer(status: u16, body: &str, reset: Option<&str>) -> Result<Value, LarkError> {
    read_answer(Answer {
        status,
        body,
        log_id: Some("hdr-log"),
        ratelimit_reset: reset,
    })
    .map(|(v, _)| v)
}

#[test]
fn answers_are_read_whole() {
    assert_eq!(
        answer(200, r#"{"code":0,"data":{"message_id":"om_1"}}"#, None).unwrap()["data"]
            ["message_id"],
        "om_1"
    );
    let e = answer(429, r#"{"code":99991400,"msg":"slow down"}"#, Some(" 52 ")).unwrap_err();
    assert_eq!(
        (e.class, e.code, e.msg.as_str(), e.retry_after),
        (
            RateLimited,
            Some(99991400),
            "slow down",
            Some(Duration::from_secs(52))
        )
    );
    assert_eq!(e.log_id.as_deref(), Some("hdr-log"));
    let e = answer(
        400,
        r#"{"code":230001,"msg":"bad","error":{"log_id":"body-log"}}"#,
        None,
    )
    .unwrap_err();
    assert_eq!((e.class, e.log_id.as_deref()), (Record, Some("body-log")));
    // Not Lark JSON: a 2xx from a proxy is fatal, and the message is the start of the body.
    let e = answer(200, &"<html>".repeat(100), None).unwrap_err();
    assert_eq!((e.class, e.msg.len()), (Fatal, 200));
    assert_eq!(
        answer(200, r#"{"code":"0"}"#, None).unwrap_err().class,
        Fatal
    );
}

#[test]
fn a_ratelimit_reset_is_bounded() {
    // A u64::MAX reset once reached `Instant::now() + reset` (limits::hold_app) and panicked.
    for reset in ["18446744073709551615", "86400"] {
        let e = answer(429, r#"{"code":99991400}"#, Some(reset)).unwrap_err();
        assert_eq!(e.retry_after, Some(MAX_RATELIMIT_RESET), "{reset}");
    }
    for reset in ["-1", "1.5", "soon", ""] {
        let e = answer(429, r#"{"code":99991400}"#, Some(reset)).unwrap_err();
        assert_eq!(e.retry_after, None, "{reset}");
    }
}

#[test]
fn throttle_answers_name_their_scope() {
    let reset = Some(" 7 ");
    let throttle = |status, body: &str, reset| answer(status, body, reset).unwrap_err().throttle();
    // §4: the gateway's app quota, with its reset when it sends one.
    assert_eq!(
        throttle(429, r#"{"code":99991400}"#, reset),
        Some(Throttle::App(Some(Duration::from_secs(7))))
    );
    assert_eq!(
        throttle(400, r#"{"code":99991400}"#, None),
        Some(Throttle::App(None))
    );
    // §3: the message service's overall throttle (also a webhook's, §8) is app-wide; a reset
    // header is the gateway's and not read for it. §8: so is a webhook's 9499 "too many
    // request", with HTTP 200 or 400.
    assert_eq!(
        throttle(200, r#"{"code":11232}"#, reset),
        Some(Throttle::App(None))
    );
    for status in [200, 400] {
        assert_eq!(
            throttle(status, r#"{"code":9499,"msg":"too many request"}"#, reset),
            Some(Throttle::App(None)),
            "{status}"
        );
    }
    // §3, §4: 5 QPS per user or chat.
    for code in [230020, 11233] {
        let body = format!(r#"{{"code":{code}}}"#);
        assert_eq!(
            throttle(400, &body, reset),
            Some(Throttle::Receiver),
            "{code}"
        );
    }
    // Not throttles: the monthly quota (F-cfg), the batch_send daily quota, a webhook's
    // malformed body (9499 "Bad Request"), a record error, no code at all.
    for body in [
        r#"{"code":99991403}"#,
        r#"{"code":11247}"#,
        r#"{"code":9499,"msg":"Bad Request"}"#,
        r#"{"code":230001}"#,
        "<html>",
    ] {
        assert_eq!(throttle(429, body, reset), None, "{body}");
    }
    assert_eq!(LarkError::transport("reset").throttle(), None);
}

/// Every code of the PATCH table (lark-api.md §14) with the class lark-sink gives it.
const PATCH_TABLE: &[(i64, &str, ErrorClass)] = &[
    (230001, "…, ext=invalid message_id", Message),
    (230001, "…, ext=This message is NOT a card", Message),
    (
        230001,
        "…, ext=bot or user is not the message`s sender",
        Message,
    ),
    (
        230001,
        "…, ext=the card is not shared: update_multi must be true",
        Message,
    ),
    (
        230001,
        "…, ext=invalid message content. validate content fail",
        Record,
    ),
    (230001, "…, ext=Internal Error", Backoff),
    (230006, "Bot ability is not activated.", Fatal),
    (230011, "The message is recalled.", Message),
    (230013, "Bot has NO availability to this user.", Record),
    (
        230020,
        "This operation triggers the frequency limit.",
        Backoff,
    ),
    (
        230025,
        "The length of the message content reaches its limit.",
        Record,
    ),
    (230027, "Lack of necessary permissions.", Config),
    (230028, "The messages do NOT pass the audit.", Record),
    (
        230031,
        "Message can only be modified within 14 days after sending.",
        Message,
    ),
    (
        230099,
        "Failed to create card content, ext=ErrCode: 200621",
        Record,
    ),
    (
        230110,
        "Action unavailable as the message has been deleted.",
        Message,
    ),
    (
        232009,
        "Your request specifies a chat which has already been dissolved.",
        Record,
    ),
    (99991400, "request trigger frequency limit", RateLimited),
    (99991663, "Invalid access token", Token),
    (99991661, "Need a token", Token),
    (99991671, "Invalid token", Token),
    (99991665, "", Token),
];

/// Every code of the PUT table (§14).
const PUT_TABLE: &[(i64, &str, ErrorClass)] = &[
    (230001, "…, ext=invalid msg_type", Message),
    (
        230001,
        "…, ext=invalid message content. validate content fail",
        Record,
    ),
    (230001, "…, ext=Internal Error", Backoff),
    (230002, "The bot can not be outside the group.", Record),
    (230006, "Bot ability is not activated.", Fatal),
    (230011, "The message is recalled.", Message),
    (230013, "Bot has NO availability to this user.", Record),
    (
        230018,
        "These operations are NOT allowed at current group settings.",
        Record,
    ),
    (
        230020,
        "This operation triggers the frequency limit.",
        Backoff,
    ),
    (
        230022,
        "The content of the message contains sensitive information.",
        Record,
    ),
    (
        230025,
        "The length of the message content reaches its limit.",
        Record,
    ),
    (230027, "Lack of necessary permissions.", Config),
    (230028, "The messages do NOT pass the audit.", Record),
    (230035, "Send message permission deny.", Record),
    (230038, "Cross tenant p2p chat operate forbid.", Record),
    (230050, "The message is invisible to the operator.", Message),
    (
        230054,
        "This operation is not supported for this message type.",
        Message,
    ),
    (230055, "The type of file upload does not match", Record),
    (
        230071,
        "The operator is not the sender of the message.",
        Message,
    ),
    (
        230072,
        "The message has reached the number of times it can be edited.",
        Message,
    ),
    (
        230073,
        "The message in the secret group is not allowed to be edited.",
        Message,
    ),
    (
        230074,
        "The message in the third-party encryption group …",
        Message,
    ),
    (
        230075,
        "The message has exceeded the time that can be edited.",
        Message,
    ),
    (
        230110,
        "Action unavailable as the message has been deleted.",
        Message,
    ),
    (
        232009,
        "Your request specifies a chat which has already been dissolved.",
        Record,
    ),
    (99991400, "request trigger frequency limit", RateLimited),
    (99991663, "Invalid access token", Token),
];

/// Every code of the DELETE list (§14). 230011 / 230110 are success for the client
/// (`Recalled::AlreadyGone`); as classes they are F-msg.
const DELETE_TABLE: &[(i64, &str, ErrorClass)] = &[
    (230001, "…, ext=invalid message_id", Record),
    (230001, "…, ext=Internal Error", Backoff),
    (230002, "The bot can not be outside the group.", Record),
    (230006, "Bot ability is not activated.", Fatal),
    (230009, "Message has expired when recall message.", Record),
    (230011, "The message is recalled.", Message),
    (230013, "Bot has NO availability to this user.", Record),
    (230026, "No permission to recall this message.", Record),
    (230027, "Lack of necessary permissions.", Config),
    (230050, "The message is invisible to the operator.", Record),
    (
        230054,
        "This operation is not supported for this message type.",
        Record,
    ),
    (
        230110,
        "Action unavailable as the message has been deleted.",
        Message,
    ),
    (
        232009,
        "Your request specifies a chat which has already been dissolved.",
        Record,
    ),
    (99991400, "request trigger frequency limit", RateLimited),
    (99991663, "Invalid access token", Token),
];

#[test]
fn lifecycle_tables_classify_every_code() {
    for (call, table) in [
        (Call::UpdateCard, PATCH_TABLE),
        (Call::Edit, PATCH_TABLE),
        (Call::Edit, PUT_TABLE),
        (Call::Recall, DELETE_TABLE),
    ] {
        for &(code, msg, class) in table {
            let status = if code == 99991400 { 429 } else { 400 };
            assert_eq!(
                classify_call(call, status, Some(code), msg),
                class,
                "{call:?} {code} {msg}"
            );
            let body = serde_json::json!({ "code": code, "msg": msg }).to_string();
            let e = answer(status, &body, None).unwrap_err().for_call(call);
            assert_eq!(e.class, class, "for_call {call:?} {code} {msg}");
        }
    }
    assert!(!Message.is_retryable());
    assert_eq!(Message.label(), "F-msg");
}

#[test]
fn the_same_code_means_what_its_call_says() {
    // 230071 / 230075 / 230011 on a send or reply keep their §3 / §2.5 meaning.
    for code in [230071, 230072, 230075, 230011, 230110, 230054] {
        assert_eq!(
            classify_call(Call::Send, 400, Some(code), ""),
            Record,
            "{code}"
        );
    }
    assert_eq!(classify_call(Call::Edit, 400, Some(230075), ""), Message);
    // 230001 ext=Internal Error is transient on every lifecycle call, other 230001 are not.
    assert_eq!(
        classify_call(Call::Send, 400, Some(230001), "ext=Internal Error"),
        Record
    );
    // Unknown codes and statuses fall back to the send rules.
    assert_eq!(classify_call(Call::UpdateCard, 503, None, ""), Backoff);
    assert_eq!(classify_call(Call::Recall, 400, Some(424242), ""), Record);
    assert!(recall_gone(230011) && recall_gone(230110) && !recall_gone(230009));
}

#[test]
fn for_call_keeps_local_and_escalated_classes() {
    let escalated = answer(400, r#"{"code":99991663}"#, None)
        .unwrap_err()
        .with_class(Fatal)
        .for_call(Call::UpdateCard);
    assert_eq!(escalated.class, Fatal);
    let local = LarkError::local(Config, "no app").for_call(Call::Edit);
    assert_eq!(local.class, Config);
}

#[test]
fn a_per_message_throttle_is_named() {
    let e = answer(400, r#"{"code":230020}"#, None).unwrap_err();
    assert!(e.message_throttled(Call::UpdateCard) && e.message_throttled(Call::Edit));
    assert!(!e.message_throttled(Call::Send) && !e.message_throttled(Call::Recall));
    assert_eq!(e.throttle(), Some(Throttle::Receiver));
    let app = answer(429, r#"{"code":99991400}"#, Some("3")).unwrap_err();
    assert!(!app.message_throttled(Call::UpdateCard));
    assert_eq!(
        app.for_call(Call::UpdateCard).throttle(),
        Some(Throttle::App(Some(Duration::from_secs(3))))
    );
}

#[test]
fn local_errors_carry_no_answer() {
    let e = LarkError::local(Config, "no webhook named 'x' is configured");
    assert_eq!(
        (
            e.class,
            e.http_status,
            e.code,
            e.log_id.clone(),
            e.retry_after
        ),
        (Config, None, None, None, None)
    );
    assert_eq!(e.to_string(), "no webhook named 'x' is configured");
    assert_eq!(e.with_class(Fatal).class, Fatal);
}

#[test]
fn display_carries_code_status_and_log_id() {
    let e = LarkError {
        class: Record,
        http_status: Some(400),
        code: Some(230002),
        msg: "The bot can not be outside the group.".into(),
        log_id: Some("2024abc".into()),
        retry_after: None,
    };
    assert_eq!(
        e.to_string(),
        "Lark code 230002 (HTTP 400): The bot can not be outside the group. [log_id 2024abc]"
    );
}
