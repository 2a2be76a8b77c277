//! Unit tests of [`super`]: the schemas, the addressing and content rules and the size limits,
//! in their own file so that `validate.rs` reads as the rules alone.

use super::*;
use serde_json::json;

fn v() -> EnvelopeValidator {
    EnvelopeValidator::new().unwrap()
}

fn err(value: Value) -> String {
    v().validate(&value, None).unwrap_err().to_string()
}

#[test]
fn defaults_and_normalisation() {
    let e = v()
        .validate(
            &json!({"receiveId": "ou_a", "content": {"text": "hi"}}),
            None,
        )
        .unwrap();
    assert_eq!(
        e.receiver,
        Receiver::Id {
            id_type: IdType::OpenId,
            id: "ou_a".into()
        }
    );
    assert_eq!(e.msg_type, "text");
    assert_eq!(e.content, r#"{"text":"hi"}"#);
    let e = v()
        .validate(
            &json!({"receiveType": "chat", "receiveId": "oc_1", "contentType": "text", "content": "{\"text\":\"x\"}"}),
            None,
        )
        .unwrap();
    assert_eq!(e.receiver.describe(), "chat_id:oc_1");
    assert_eq!(e.content, "{\"text\":\"x\"}");
    for (rt, id_type) in [
        ("email", IdType::Email),
        ("union_id", IdType::UnionId),
        ("user_id", IdType::UserId),
        ("open_id", IdType::OpenId),
    ] {
        let e = v()
            .validate(
                &json!({"receiveType": rt, "receiveId": "x", "content": {"text": "t"}}),
                None,
            )
            .unwrap();
        assert_eq!(
            e.receiver,
            Receiver::Id {
                id_type,
                id: "x".into()
            }
        );
    }
    let e = v()
        .validate(
            &json!({"receiveType": "phone", "receiveId": "+86138", "content": {"text": "t"}}),
            None,
        )
        .unwrap();
    assert_eq!(e.receiver, Receiver::Phone("+86138".into()));
}

#[test]
fn names_every_failing_path() {
    let e = err(
        json!({"receiveType": "fax", "receiveId": "", "contentType": "telex", "content": 5, "extra": 1}),
    );
    for p in [
        "/receiveType",
        "/receiveId",
        "/contentType",
        "/content",
        "/:",
    ] {
        assert!(e.contains(p), "{p} missing in {e}");
    }
    assert!(err(json!({"content": "{}"})).contains("\"receiveId\" is a required property"));
    let e = v()
        .validate(&json!({"receiveId": "", "content": {"text": "x"}}), Some(2))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/2/receiveId:"), "{e}");
}

#[test]
fn content_must_hold_a_json_object_of_the_right_shape() {
    assert!(err(json!({"receiveId": "a", "content": "not json"}))
        .contains("/content: is not a string holding JSON"));
    assert!(err(json!({"receiveId": "a", "content": "[1]"})).contains("holds a JSON array"));
    let e = err(json!({"receiveId": "a", "content": {"txt": "x"}}));
    assert!(
        e.contains("/content: \"text\" is a required property"),
        "{e}"
    );
    let e = err(json!({"receiveId": "a", "contentType": "image", "content": {"image_key": ""}}));
    assert!(e.contains("/content/image_key"), "{e}");
    let e = err(
        json!({"receiveId": "a", "contentType": "post", "content": {"en_us": {"content": [[{"tag": "a", "text": "x"}]]}}}),
    );
    assert!(e.contains("/content/en_us/content/0/0"), "{e}");
    let e = err(
        json!({"receiveId": "a", "contentType": "interactive", "content": {"type": "template", "data": {}}}),
    );
    assert!(e.contains("/content"), "{e}");
}

#[test]
fn every_msg_type_accepts_its_documented_shape() {
    let ok = [
        ("text", json!({"text": "hi <at user_id=\"all\"></at>"})),
        (
            "post",
            json!({"zh_cn": {"title": "t", "content": [[{"tag": "text", "text": "a"}, {"tag": "a", "text": "l", "href": "https://x"}], [{"tag": "at", "user_id": "ou_1"}], [{"tag": "img", "image_key": "img_1"}], [{"tag": "code_block", "language": "JSON", "text": "{}"}]]}, "en_us": {"content": [[{"tag": "md", "text": "**b**"}]]}}),
        ),
        ("image", json!({"image_key": "img_1"})),
        ("file", json!({"file_key": "file_1"})),
        ("audio", json!({"file_key": "file_1"})),
        ("media", json!({"file_key": "file_1", "image_key": "img_1"})),
        ("sticker", json!({"file_key": "file_1"})),
        (
            "interactive",
            json!({"config": {"wide_screen_mode": true}, "header": {"title": {"tag": "plain_text", "content": "x"}}, "elements": [{"tag": "hr"}]}),
        ),
        (
            "interactive",
            json!({"schema": "2.0", "body": {"elements": []}}),
        ),
        (
            "interactive",
            json!({"type": "template", "data": {"template_id": "AAq1", "template_variable": {"k": "v"}}}),
        ),
        (
            "interactive",
            json!({"type": "card", "data": {"card_id": "c1"}}),
        ),
        ("share_chat", json!({"chat_id": "oc_1"})),
        ("share_user", json!({"user_id": "ou_1"})),
        (
            "system",
            json!({"type": "divider", "params": {"divider_text": {"text": "new"}}, "options": {"need_rollup": true}}),
        ),
    ];
    for (t, c) in ok {
        v().validate(
            &json!({"receiveId": "a", "contentType": t, "content": c}),
            None,
        )
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

#[test]
fn webhook_receivers_must_be_configured_and_of_a_webhook_type() {
    let v = EnvelopeValidator::with_webhooks(vec!["ops".into()]).unwrap();
    let e = v
        .validate(&json!({"receiveType": "webhook", "receiveId": "ops", "contentType": "interactive", "content": {"elements": []}}), None)
        .unwrap();
    assert_eq!(e.receiver, Receiver::Webhook("ops".into()));
    let err = v
        .validate(
            &json!({"receiveType": "webhook", "receiveId": "nope", "content": {"text": "x"}}),
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no webhook named 'nope'") && err.contains("configured: ops"),
        "{err}"
    );
    let err = v
        .validate(&json!({"receiveType": "webhook", "receiveId": "ops", "contentType": "file", "content": {"file_key": "f"}}), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot send 'file'"), "{err}");
}

#[test]
fn urgent_requests_are_checked() {
    let e = v()
        .validate(&json!({"receiveId": "a", "content": {"text": "x"}, "urgent": {"type": "sms", "userIds": ["ou_1"]}}), None)
        .unwrap();
    assert_eq!(
        e.urgent,
        Some(Urgent {
            kind: UrgentKind::Sms,
            user_ids: vec!["ou_1".into()]
        })
    );
    let err = err(
        json!({"receiveId": "a", "content": {"text": "x"}, "urgent": {"type": "fax", "userIds": []}}),
    );
    assert!(
        err.contains("/urgent/type") && err.contains("/urgent/userIds"),
        "{err}"
    );
    let hooks = EnvelopeValidator::with_webhooks(vec!["ops".into()]).unwrap();
    let err = hooks
        .validate(&json!({"receiveType": "webhook", "receiveId": "ops", "content": {"text": "x"}, "urgent": {"type": "app", "userIds": ["ou_1"]}}), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be buzzed"), "{err}");
}

#[test]
fn replies_need_no_receiver_but_not_webhooks_or_system() {
    let e = v()
        .validate(
            &json!({"replyTo": "om_abc", "content": {"text": "x"}}),
            None,
        )
        .unwrap();
    assert_eq!(e.receiver, Receiver::Parent("om_abc".into()));
    assert_eq!(
        e.reply,
        Some(ReplyTo {
            message_id: "om_abc".into(),
            in_thread: false
        })
    );
    let e = v()
        .validate(&json!({"receiveType": "chat", "receiveId": "oc_1", "replyTo": "om_abc", "replyInThread": true, "content": {"text": "x"}}), None)
        .unwrap();
    assert_eq!(e.receiver.describe(), "chat_id:oc_1");
    assert!(e.reply.is_some_and(|r| r.in_thread));
    // Without replyTo the receiver is still required; replyInThread needs replyTo.
    assert!(err(json!({"content": {"text": "x"}})).contains("\"receiveId\" is a required property"));
    let e = err(json!({"receiveId": "a", "replyInThread": true, "content": {"text": "x"}}));
    assert!(e.contains("replyTo"), "{e}");
    assert!(err(json!({"replyTo": "12345", "content": {"text": "x"}})).contains("/replyTo"));
    assert!(err(json!({"replyTo": "om_a/../b", "content": {"text": "x"}})).contains("/replyTo"));
    let hooks = EnvelopeValidator::with_webhooks(vec!["ops".into()]).unwrap();
    let e = hooks
        .validate(&json!({"receiveType": "webhook", "receiveId": "ops", "replyTo": "om_abc", "content": {"text": "x"}}), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/replyTo") && e.contains("webhooks cannot reply"),
        "{e}"
    );
    let e = err(
        json!({"receiveId": "ou_a", "replyTo": "om_abc", "contentType": "system", "content": {"type": "divider", "params": {"divider_text": {"text": "x"}}}}),
    );
    assert!(
        e.contains("/contentType") && e.contains("cannot be a reply"),
        "{e}"
    );
}

#[test]
fn system_divider_text_counts_cjk_twice() {
    let sys = |t: &str| json!({"receiveId": "ou_a", "contentType": "system", "content": {"type": "divider", "params": {"divider_text": {"text": t}}}});
    v().validate(&sys(&"新".repeat(10)), None).unwrap();
    let e = err(sys(&"新".repeat(11)));
    assert!(
        e.contains("/content/params/divider_text/text") && e.contains("22 columns"),
        "{e}"
    );
    assert!(err(sys(&"x".repeat(21))).contains("divider_text/text"));
}

#[test]
fn violations_quoting_huge_values_are_clipped() {
    let e = err(json!({"receiveId": "x".repeat(100_000), "content": 5}));
    assert!(e.len() < 2 * MAX_VIOLATION_BYTES, "{} bytes", e.len());
    assert!(
        e.contains("/receiveId: \"xxx") && e.contains("more bytes)"),
        "{e}"
    );
    assert!(e.contains("/content: 5 is not of types"), "{e}");
}

#[test]
fn size_limits() {
    let big = "x".repeat(31 * 1024);
    let e = err(
        json!({"receiveId": "a", "contentType": "interactive", "content": {"elements": [{"tag": "markdown", "content": big}]}}),
    );
    assert!(
        e.contains("exceeds the 30 KiB limit for interactive"),
        "{e}"
    );
    // The same text is fine as a text message (150 KiB).
    v().validate(&json!({"receiveId": "a", "content": {"text": big}}), None)
        .unwrap();
    let huge = "x".repeat(151 * 1024);
    assert!(err(json!({"receiveId": "a", "content": {"text": huge}})).contains("150 KiB"));
}

#[test]
fn message_keys_make_upserts_and_recalls() {
    let e = v()
        .validate(
            &json!({"receiveType": "chat", "receiveId": "oc_1", "messageKey": "disk-full/db1", "content": {"text": "firing"}}),
            None,
        )
        .unwrap();
    assert_eq!(
        e.op,
        Operation::Upsert {
            key: "disk-full/db1".into()
        }
    );
    assert_eq!(e.op.key(), Some("disk-full/db1"));
    // `recall: false` is an upsert; no key, a plain send.
    let e = v()
        .validate(
            &json!({"receiveId": "ou_a", "messageKey": "k", "recall": false, "content": {"text": "x"}}),
            None,
        )
        .unwrap();
    assert!(matches!(e.op, Operation::Upsert { .. }));
    let e = v()
        .validate(
            &json!({"receiveId": "ou_a", "content": {"text": "x"}}),
            None,
        )
        .unwrap();
    assert_eq!((e.op.clone(), e.op.key()), (Operation::Send, None));
    // A recall needs no content; any content given is not checked.
    let e = v()
        .validate(
            &json!({"receiveType": "chat", "receiveId": "oc_1", "messageKey": "k", "recall": true}),
            None,
        )
        .unwrap();
    assert_eq!(
        (e.op, e.content.as_str()),
        (Operation::Recall { key: "k".into() }, "")
    );
    v().validate(
        &json!({"receiveId": "ou_a", "messageKey": "k", "recall": true, "contentType": "image", "content": {"nope": 1}}),
        None,
    )
    .unwrap();
}

#[test]
fn message_key_rules() {
    // Without a key, recall means nothing: refused, like content missing without one.
    let e = err(json!({"receiveId": "ou_a", "recall": true, "content": {"text": "x"}}));
    assert!(e.contains("messageKey"), "{e}");
    let e = err(json!({"receiveId": "ou_a", "messageKey": "k"}));
    assert!(e.contains("content"), "{e}");
    assert!(
        err(json!({"receiveId": "ou_a", "messageKey": "", "content": {"text": "x"}}))
            .contains("/messageKey")
    );
    assert!(err(
        json!({"receiveId": "ou_a", "messageKey": "k".repeat(201), "content": {"text": "x"}})
    )
    .contains("/messageKey"));
    v().validate(
        &json!({"receiveId": "ou_a", "messageKey": "k".repeat(200), "content": {"text": "x"}}),
        None,
    )
    .unwrap();
    // Webhooks return no message_id: nothing to update.
    let hooks = EnvelopeValidator::with_webhooks(vec!["ops".into()]).unwrap();
    let e = hooks
        .validate(
            &json!({"receiveType": "webhook", "receiveId": "ops", "messageKey": "k", "content": {"text": "x"}}),
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/messageKey") && e.contains("webhooks cannot update"),
        "{e}"
    );
    // Without a state topic a key would be forgotten: refused with the key to set.
    let e = v()
        .allow_keys(false)
        .validate(
            &json!({"receiveId": "ou_a", "messageKey": "k", "content": {"text": "x"}}),
            Some(3),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/3/messageKey") && e.contains("lark.state.topic"),
        "{e}"
    );
    v().allow_keys(false)
        .validate(
            &json!({"receiveId": "ou_a", "content": {"text": "x"}}),
            None,
        )
        .unwrap();
}

#[test]
fn a_keyed_cards_buttons_carry_its_key() {
    let card = |content: Value| {
        let e = v()
            .validate(
                &json!({"receiveId": "ou_a", "messageKey": "fp-1", "contentType": "interactive", "content": content}),
                None,
            )
            .unwrap();
        serde_json::from_str::<Value>(&e.content).unwrap()
    };
    // JSON 1.0: a button with a value, one without, a link button, a select with a value.
    let c = card(json!({"elements": [{"tag": "action", "actions": [
        {"tag": "button", "text": {"tag": "plain_text", "content": "Ack"}, "value": {"action": "ack"}},
        {"tag": "button", "text": {"tag": "plain_text", "content": "Silence"}},
        {"tag": "button", "text": {"tag": "plain_text", "content": "Runbook"}, "url": "https://x"},
        {"tag": "select_static", "value": {"k": "v"}, "options": []}]}]}));
    let actions = &c["elements"][0]["actions"];
    assert_eq!(
        actions[0]["value"],
        json!({"action": "ack", "lark_sink_message_key": "fp-1"})
    );
    assert_eq!(
        actions[1]["value"],
        json!({"lark_sink_message_key": "fp-1"})
    );
    assert!(
        actions[2].get("value").is_none(),
        "a link button calls nothing back"
    );
    assert_eq!(actions[3]["value"]["lark_sink_message_key"], "fp-1");
    // JSON 2.0: callback behaviors.
    let c = card(
        json!({"schema": "2.0", "body": {"elements": [{"tag": "button",
        "behaviors": [{"type": "callback", "value": {"a": 1}}, {"type": "open_url", "default_url": "https://x"}]}]}}),
    );
    let behaviors = &c["body"]["elements"][0]["behaviors"];
    assert_eq!(
        behaviors[0]["value"],
        json!({"a": 1, "lark_sink_message_key": "fp-1"})
    );
    assert!(behaviors[1].get("value").is_none());
    // A value naming the key already is left alone.
    let c =
        card(json!({"elements": [{"tag": "button", "value": {"lark_sink_message_key": "mine"}}]}));
    assert_eq!(c["elements"][0]["value"]["lark_sink_message_key"], "mine");
}

#[test]
fn keyed_cards_are_made_updatable() {
    let card = |content: Value| {
        v().validate(
            &json!({"receiveId": "ou_a", "messageKey": "k", "contentType": "interactive", "content": content}),
            None,
        )
        .unwrap()
        .content
    };
    let parsed = |s: String| serde_json::from_str::<Value>(&s).unwrap();
    // JSON 1.0: update_multi is set (it defaults to false, and PATCH needs it before and after).
    let c = parsed(card(
        json!({"elements": [{"tag": "markdown", "content": "x"}]}),
    ));
    assert_eq!(c["config"]["update_multi"], json!(true));
    let c = parsed(card(
        json!({"config": {"wide_screen_mode": true, "update_multi": false}, "elements": []}),
    ));
    assert_eq!(
        c["config"],
        json!({"wide_screen_mode": true, "update_multi": true})
    );
    // Already updatable, JSON 2.0, and template references stay as given (byte for byte).
    for given in [
        r#"{"config":{"update_multi":true},"elements":[]}"#,
        r#"{"schema":"2.0","body":{"elements":[]}}"#,
        r#"{"type":"template","data":{"template_id":"AAq1"}}"#,
    ] {
        assert_eq!(card(Value::String(given.into())), given);
    }
    // Unkeyed cards are sent as given.
    let e = v()
        .validate(
            &json!({"receiveId": "ou_a", "contentType": "interactive", "content": {"elements": []}}),
            None,
        )
        .unwrap();
    assert_eq!(e.content, r#"{"elements":[]}"#);
}

#[test]
fn priority_is_read_and_defaults_to_normal() {
    use crate::envelope::Priority;
    let p = |extra: Value| {
        let mut r = json!({"receiveId": "ou_a", "content": {"text": "x"}});
        if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v().validate(&r, None).map(|e| e.priority)
    };
    assert_eq!(p(json!({})).unwrap(), Priority::Normal);
    assert_eq!(p(json!({"priority": "high"})).unwrap(), Priority::High);
    assert_eq!(p(json!({"priority": "low"})).unwrap(), Priority::Low);
    assert_eq!(p(json!({"priority": "normal"})).unwrap(), Priority::Normal);
    let e = p(json!({"priority": "urgent"})).unwrap_err().to_string();
    assert!(e.contains("/priority"), "{e}");
    assert!(p(json!({"priority": 1})).is_err());
    // A recall keeps its priority too (it is queued like any message).
    let r = v()
        .validate(
            &json!({"receiveId": "ou_a", "messageKey": "k", "recall": true, "priority": "high"}),
            None,
        )
        .unwrap();
    assert_eq!(r.priority, Priority::High);
}
