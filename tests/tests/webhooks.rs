//! Custom-bot webhooks end to end: records with `receiveType: "webhook"` reach the emulator's
//! `/open-apis/bot/v2/hook/{token}` in the webhook's own body shape, signed when the bot has a
//! secret (the emulator checks the signature), within the bot's limits.

use std::time::Duration;

use lark_sink::emulator::Directory;
use lark_sink_e2e::*;
use serde_json::{json, Value};

/// The demo directory, with a distinctive signing secret for `hook-signed`, so the harness can
/// grep every connector log for it.
async fn scenario(prefix: &str) -> Scenario {
    let mut directory = Directory::demo();
    for w in &mut directory.webhooks {
        if w.token == "hook-signed" {
            w.secret = Some(WEBHOOK_SECRET.into());
        }
    }
    Scenario::with_emulator(
        prefix,
        1,
        EmulatorConfig {
            directory,
            ..EmulatorConfig::default()
        },
    )
    .await
}

const WAIT: Duration = Duration::from_secs(60);

fn hooks(cfg: &mut Value) {
    let c = &mut cfg["config"];
    // Tokens are joined to lark.domain (the emulator here), as for a Feishu or Lark tenant.
    c["lark.webhooks.plain.token"] = json!("hook-plain");
    c["lark.webhooks.signed.token"] = json!("hook-signed");
    c["lark.webhooks.signed.secret"] = json!(WEBHOOK_SECRET);
    c["lark.webhooks.badsecret.token"] = json!("hook-signed");
    c["lark.webhooks.badsecret.secret"] = json!("not-the-bot-secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_messages_are_shaped_signed_and_paced() {
    let s = scenario("hooks").await;
    let card = json!({"header": {"title": {"tag": "plain_text", "content": "Disk full"}}, "elements": [{"tag": "hr"}]});
    s.send(
        &json!({"receiveType": "webhook", "receiveId": "plain", "content": {"text": "plain text"}}),
    )
    .await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "signed", "contentType": "interactive", "content": card})).await;
    s.send(
        &json!({"receiveType": "webhook", "receiveId": "signed", "contentType": "post",
        "content": {"en_us": {"title": "t", "content": [[{"tag": "text", "text": "a post"}]]}}}),
    )
    .await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "plain", "contentType": "share_chat", "content": {"chat_id": "oc_ops"}})).await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "nope", "content": {"text": "x"}}))
        .await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "plain", "contentType": "file", "content": {"file_key": "f"}})).await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "badsecret", "content": {"text": "x"}}))
        .await;
    for i in 0..12 {
        s.send(&json!({"receiveType": "webhook", "receiveId": "plain", "content": {"text": format!("burst {i}")}})).await;
    }
    let mut cfg = s.config();
    hooks(&mut cfg);
    let mut c = Connector::start(&cfg);

    wait_until("16 webhook messages", WAIT, || {
        s.lark.messages().len() >= 16
    })
    .await;
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 16, "{msgs:#?}");
    let find = |t: &str| {
        msgs.iter()
            .find(|m| m.msg_type == t)
            .unwrap_or_else(|| panic!("no {t}"))
    };
    assert_eq!(
        find("interactive").via,
        "webhook:hook-signed",
        "signed and accepted"
    );
    assert_eq!(
        find("interactive").content["header"]["title"]["content"],
        "Disk full"
    );
    assert_eq!(find("post").via, "webhook:hook-signed");
    assert_eq!(
        find("share_chat").content,
        json!({"share_chat_id": "oc_ops"})
    );
    let texts: Vec<String> = s.texts();
    assert_eq!(texts[0], "plain text");
    assert_eq!(
        texts[1..],
        (0..12).map(|i| format!("burst {i}")).collect::<Vec<_>>()[..],
        "in order"
    );
    let st = s.lark.stats();
    assert_eq!(
        st.throttled_webhook, 0,
        "paced within 5/s and 100/min: {st:?}"
    );

    let dead = s.dead_letters(3, WAIT);
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let reason = |o: &str| {
        dead.iter()
            .find(|d| d.header("__connect.errors.offset") == o)
            .map(|d| {
                (
                    d.header("__connect.errors.class.name").to_string(),
                    d.header("__connect.errors.exception.message").to_string(),
                    d.header("__connect.errors.lark.code").to_string(),
                )
            })
            .unwrap_or_default()
    };
    let (class, msg, _) = reason("4");
    assert!(
        class == "schema" && msg.contains("no webhook named 'nope'"),
        "{msg}"
    );
    let (class, msg, _) = reason("5");
    assert!(
        class == "schema" && msg.contains("cannot send 'file'"),
        "{msg}"
    );
    let (class, _, code) = reason("6");
    assert_eq!(
        (class.as_str(), code.as_str()),
        ("F-cfg", "19021"),
        "a wrong secret is refused, after one re-sign"
    );
    assert_eq!(c.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_only_connector_needs_no_app() {
    let s = scenario("hookonly").await;
    s.send(&json!({"receiveType": "webhook", "receiveId": "plain", "content": {"text": "no app needed"}})).await;
    s.send(&json!({"receiveId": "ou_alice", "content": {"text": "needs an app"}}))
        .await;
    let mut cfg = s.config();
    let c = cfg["config"].as_object_mut().unwrap();
    c.remove("lark.app.id");
    c.remove("lark.app.secret");
    hooks(&mut cfg);
    let mut c = Connector::start(&cfg);
    let dead = s.dead_letters(1, WAIT);
    assert_eq!(dead.len(), 1, "{}", c.logs());
    assert!(dead[0]
        .header("__connect.errors.exception.message")
        .contains("needs a Lark app"));
    wait_until("the webhook message", WAIT, || s.lark.messages().len() == 1).await;
    assert_eq!(s.texts(), ["no app needed"]);
    assert_eq!(
        s.lark.stats().tokens_issued,
        0,
        "no token is fetched without an app"
    );
    wait_until("both committed", WAIT, || s.committed() == vec![2]).await;
    assert_eq!(c.stop(), Some(0));
}
