//! Every msg_type of lark-api.md §2.4, end to end: one well-formed record of each type reaches
//! the emulator with its content intact, and one wrong-shaped record of each type is
//! dead-lettered with a reason naming the problem, all on one partition that never stalls.

use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// (contentType, receiveType, receiveId, content) of the well-formed records.
fn valid() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        (
            "text",
            "user",
            "ou_alice",
            json!({"text": "hi <at user_id=\"ou_bob\">Bob</at> **bold**\nline two"}),
        ),
        (
            "post",
            "chat",
            "oc_ops",
            json!({
                "zh_cn": {"title": "部署完成", "content": [[{"tag": "text", "text": "服务 "},
                    {"tag": "a", "text": "仪表盘", "href": "https://example.com/d"}]]},
                "en_us": {"title": "Deploy finished", "content": [
                    [{"tag": "text", "text": "billing", "style": ["bold"]}, {"tag": "at", "user_id": "ou_alice"}],
                    [{"tag": "img", "image_key": "img_v2_1"}],
                    [{"tag": "code_block", "language": "JSON", "text": "{\"v\":1}"}],
                    [{"tag": "emotion", "emoji_type": "SMILE"}, {"tag": "hr"}]]},
                "ja_jp": {"title": "完了", "content": [[{"tag": "md", "text": "**done**"}]]}
            }),
        ),
        (
            "image",
            "chat",
            "oc_ops",
            json!({"image_key": "img_v2_abc"}),
        ),
        ("file", "chat", "oc_ops", json!({"file_key": "file_v2_abc"})),
        (
            "audio",
            "user",
            "ou_bob",
            json!({"file_key": "file_v2_voice"}),
        ),
        (
            "media",
            "user",
            "ou_bob",
            json!({"file_key": "file_v2_clip", "image_key": "img_v2_cover"}),
        ),
        (
            "sticker",
            "chat",
            "oc_team",
            json!({"file_key": "file_v2_sticker"}),
        ),
        (
            "interactive",
            "chat",
            "oc_team",
            json!({"config": {"wide_screen_mode": true},
                   "header": {"template": "red", "title": {"tag": "plain_text", "content": "lag > 10k"}},
                   "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**topic** orders"}},
                                {"tag": "hr"}]}),
        ),
        (
            "interactive",
            "chat",
            "oc_team",
            json!({"type": "template", "data": {"template_id": "AAqk1234",
                   "template_version_name": "1.0.0", "template_variable": {"service": "billing", "n": 3}}}),
        ),
        (
            "interactive",
            "user",
            "ou_alice",
            json!({"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "v2"}]}}),
        ),
        (
            "share_chat",
            "user",
            "ou_bob",
            json!({"chat_id": "oc_team"}),
        ),
        ("share_user", "chat", "oc_ops", json!({"user_id": "ou_bob"})),
        // §2.4: system messages are bot-p2p only, divider text ≤ 20 columns.
        (
            "system",
            "user",
            "ou_alice",
            json!({"type": "divider", "params": {"divider_text": {"text": "新会话",
                   "i18n_text": {"zh_CN": "新会话", "en_US": "New session"}}}, "options": {"need_rollup": true}}),
        ),
    ]
}

/// (contentType, receiveType, receiveId, content, what the dead letter's reason must contain).
fn wrong() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    Value,
    Vec<&'static str>,
)> {
    vec![
        (
            "text",
            "user",
            "ou_alice",
            json!({"txt": "typo"}),
            vec!["/content", "\"text\" is a required property"],
        ),
        // The webhook dialect ({"post": {...}}) sent to the API: "post" is no locale key.
        (
            "post",
            "chat",
            "oc_ops",
            json!({"post": {"zh_cn": {"content": []}}}),
            vec!["/content", "\"post\"", "[a-z]{2}_[a-z]{2}"],
        ),
        (
            "post",
            "chat",
            "oc_ops",
            json!({"en_us": {"content": [[{"tag": "a", "text": "no href"}]]}}),
            vec![
                "/content/en_us/content/0/0",
                "\"href\" is a required property",
            ],
        ),
        (
            "image",
            "chat",
            "oc_ops",
            json!({"image_key": ""}),
            vec!["/content/image_key"],
        ),
        (
            "file",
            "chat",
            "oc_ops",
            json!({"file_key": 42}),
            vec!["/content/file_key", "string"],
        ),
        (
            "audio",
            "user",
            "ou_bob",
            json!({}),
            vec!["\"file_key\" is a required property"],
        ),
        (
            "media",
            "user",
            "ou_bob",
            json!({"image_key": "img_v2_cover"}),
            vec!["\"file_key\" is a required property"],
        ),
        (
            "sticker",
            "chat",
            "oc_team",
            json!({"sticker_id": "x"}),
            vec!["\"file_key\" is a required property"],
        ),
        (
            "interactive",
            "chat",
            "oc_team",
            json!({"title": "no card"}),
            vec!["/content", "elements", "header"],
        ),
        (
            "interactive",
            "chat",
            "oc_team",
            json!({"type": "template", "data": {"template_variable": {"k": "v"}}}),
            vec!["/content/data", "\"template_id\" is a required property"],
        ),
        // The webhook dialect's share_chat_id.
        (
            "share_chat",
            "user",
            "ou_bob",
            json!({"share_chat_id": "oc_team"}),
            vec!["\"chat_id\" is a required property"],
        ),
        (
            "share_user",
            "chat",
            "oc_ops",
            json!({"open_id": "ou_bob"}),
            vec!["\"user_id\" is a required property"],
        ),
        (
            "system",
            "user",
            "ou_alice",
            json!({"type": "divider", "params": {"divider_text": {"text": "这条分隔线的文字太长了啊"}}}),
            vec!["/content/params/divider_text/text", "CJK"],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_msg_type_is_delivered_or_dead_lettered_as_the_spec_says() {
    let s = Scenario::new("msgtypes", 1).await;
    let good = valid();
    let bad = wrong();
    // Interleave: good, bad, good, bad, … so every failure sits between deliveries.
    let mut expected_bad: Vec<(i64, Vec<&str>)> = Vec::new();
    let mut offset_of_good: Vec<i64> = Vec::new();
    for i in 0..good.len().max(bad.len()) {
        if let Some((t, rt, id, content)) = good.get(i) {
            let (_, o) = s
                .send(&json!({"receiveType": rt, "receiveId": id, "contentType": t, "content": content}))
                .await;
            offset_of_good.push(o);
        }
        if let Some((t, rt, id, content, reason)) = bad.get(i) {
            let (_, o) = s
                .send(&json!({"receiveType": rt, "receiveId": id, "contentType": t, "content": content}))
                .await;
            expected_bad.push((o, reason.clone()));
        }
    }
    // §2.4: system messages are p2p only. The shape is right, so only Lark can refuse it.
    let (_, group_system) = s
        .send(
            &json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "system",
            "content": {"type": "divider", "params": {"divider_text": {"text": "x"}}}}),
        )
        .await;
    let (_, last) = s
        .send(&json!({"receiveId": "ou_alice", "content": {"text": "the end"}}))
        .await;
    let total = last + 1;
    let mut c = Connector::start(&s.config());

    wait_until("every record committed", WAIT, || {
        s.committed() == vec![total]
    })
    .await;
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), good.len() + 1, "{msgs:#?}");
    for ((t, _, id, content), o) in good.iter().zip(&offset_of_good) {
        let m = msgs
            .iter()
            .find(|m| m.uuid.as_deref().and_then(uuid_coordinates) == Some((0, *o, 0)))
            .unwrap_or_else(|| panic!("{t} at offset {o} not delivered: {}", c.logs()));
        assert_eq!((m.msg_type.as_str(), m.receive_id.as_str()), (*t, *id));
        assert_eq!(&m.content, content, "{t} content arrives as sent");
    }

    let dead = s.dead_letters(bad.len() + 1, WAIT);
    assert_eq!(dead.len(), bad.len() + 1, "{dead:#?}");
    let dl_at = |o: i64| {
        dead.iter()
            .find(|d| d.header("__connect.errors.offset") == o.to_string())
            .unwrap_or_else(|| panic!("no dead letter for offset {o}"))
    };
    for (o, needles) in &expected_bad {
        let d = dl_at(*o);
        assert_eq!(d.header("__connect.errors.stage"), "VALIDATION", "{d:#?}");
        let reason = d.header("__connect.errors.exception.message");
        for n in needles {
            assert!(reason.contains(n), "offset {o}: {n:?} not in {reason:?}");
        }
    }
    let d = dl_at(group_system);
    assert_eq!(d.header("__connect.errors.stage"), "TASK_PUT");
    assert_eq!(d.header("__connect.errors.lark.code"), "230001");
    assert!(d
        .header("__connect.errors.exception.message")
        .contains("sending system messages in group chats is not supported"));
    assert_eq!(c.stop(), Some(0));
}
