//! The Lark client against the emulator over real HTTP: the token cache's single-flight fetch,
//! its early refresh, and eviction; answers' classes; the lifecycle calls (card update, edit,
//! recall: success, the F-msg fallback codes, AlreadyGone, throttles).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lark_sink::config::LarkConfig;
use lark_sink::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultTarget};
use lark_sink::lark::{Call, ErrorClass, LarkClient, LarkError, Recalled, Throttle};
use lark_sink::secret::Secret;

async fn emulator(token_ttl: Duration) -> EmulatorHandle {
    let cfg = EmulatorConfig {
        token_ttl,
        ..EmulatorConfig::default()
    };
    Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

fn lark_config(base_url: String, secret: &str, margin: Duration) -> LarkConfig {
    LarkConfig {
        app_id: "cli_demo_app".into(),
        app_secret: Secret::new(secret),
        base_url,
        request_timeout: Duration::from_secs(5),
        token_refresh_margin: margin,
        retry_delay_max: Duration::from_secs(1),
        retry_delay_initial: Duration::from_millis(50),
        retry_timeout: Some(Duration::from_secs(5)),
        webhooks: Default::default(),
        lookup_ttl: Duration::from_secs(3600),
        lookup_negative_ttl: Duration::from_secs(300),
        email_resolve: false,
        tls_ca: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_token_fetch() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = Arc::new(
        LarkClient::new(&lark_config(
            lark.base_url(),
            "demo-secret",
            Duration::from_secs(180),
        ))
        .unwrap(),
    );
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.tokens().get().await.map(|t| t.expose().to_string()) })
        })
        .collect();
    let mut tokens = std::collections::BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(
        client.tokens().fetch_count(),
        1,
        "one fetch however many callers wait"
    );
    assert_eq!(lark.stats().tokens_issued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_before_it_expires() {
    // 4 s lifetime and a 3 s margin: the cache refreshes at half-life (2 s), well before expiry.
    let lark = emulator(Duration::from_secs(4)).await;
    let client = LarkClient::new(&lark_config(
        lark.base_url(),
        "demo-secret",
        Duration::from_secs(3),
    ))
    .unwrap();
    client.tokens().get().await.unwrap();
    client.tokens().get().await.unwrap();
    assert_eq!(client.tokens().fetch_count(), 1, "cached while fresh");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    client.tokens().get().await.unwrap();
    assert_eq!(
        client.tokens().fetch_count(),
        2,
        "refreshed ahead of Lark's expiry"
    );
    // And the token works for a send without any token error.
    let ok = client
        .send_message(
            "open_id",
            "ou_alice",
            "text",
            r#"{"text":"hi"}"#,
            "uuid-refresh-1",
        )
        .await
        .unwrap();
    assert!(ok.message_id.starts_with("om_"));
    assert_eq!(lark.stats().token_rejections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_only_drops_the_token_it_names() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = LarkClient::new(&lark_config(
        lark.base_url(),
        "demo-secret",
        Duration::from_secs(180),
    ))
    .unwrap();
    let t1 = client.tokens().get().await.unwrap();
    client.tokens().evict(&Secret::new("t-some-other-token"));
    assert_eq!(client.tokens().get().await.unwrap(), t1);
    assert_eq!(client.tokens().fetch_count(), 1);
    client.tokens().evict(&t1);
    client.tokens().get().await.unwrap();
    assert_eq!(client.tokens().fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_classified_and_wrong_credentials_are_fatal() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = LarkClient::new(&lark_config(
        lark.base_url(),
        "demo-secret",
        Duration::from_secs(180),
    ))
    .unwrap();
    let e = client
        .send_message(
            "chat_id",
            "oc_outside",
            "text",
            r#"{"text":"x"}"#,
            "uuid-c-1",
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code, e.http_status),
        (ErrorClass::Record, Some(230002), Some(400))
    );
    assert!(e.log_id.is_some());

    let bad = LarkClient::new(&lark_config(
        lark.base_url(),
        "wrong",
        Duration::from_secs(180),
    ))
    .unwrap();
    let e = bad
        .send_message("open_id", "ou_alice", "text", r#"{"text":"x"}"#, "uuid-c-2")
        .await
        .unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Fatal, Some(10014)));
    assert!(
        !e.to_string().contains("wrong"),
        "the secret must not appear in errors: {e}"
    );

    // Nothing listening: a transport error, retryable.
    let down = LarkClient::new(&lark_config(
        "http://127.0.0.1:9".into(),
        "demo-secret",
        Duration::from_secs(180),
    ))
    .unwrap();
    let e = down.tokens().get().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Backoff);
}

/// A client of the demo app against `lark`.
fn demo_client(lark: &EmulatorHandle) -> LarkClient {
    LarkClient::new(&lark_config(
        lark.base_url(),
        "demo-secret",
        Duration::from_secs(180),
    ))
    .unwrap()
}

/// A shared 1.0 card (`update_multi: true`, lark-api.md §14) saying `text`.
fn shared_card(text: &str) -> String {
    serde_json::json!({
        "config": {"update_multi": true},
        "elements": [{"tag": "markdown", "content": text}]
    })
    .to_string()
}

/// Sends `content` as `msg_type` to the Ops chat and returns the message id.
async fn sent(client: &LarkClient, msg_type: &str, content: &str, uuid: &str) -> String {
    client
        .send_message("chat_id", "oc_ops", msg_type, content, uuid)
        .await
        .unwrap()
        .message_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_are_updated_texts_edited_and_messages_recalled() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = demo_client(&lark);
    let card = sent(&client, "interactive", &shared_card("firing"), "lc-1").await;
    let ok = client
        .update_card(&card, &shared_card("resolved"))
        .await
        .unwrap();
    assert!(ok.log_id.is_some());
    let view = lark.message_view(&card).unwrap();
    assert_eq!(view.content["elements"][0]["content"], "resolved");
    assert_eq!((view.patch_count, view.versions.len()), (1, 2));

    let text = sent(&client, "text", r#"{"text":"v1"}"#, "lc-2").await;
    client
        .edit_message(&text, "text", r#"{"text":"v2"}"#)
        .await
        .unwrap();
    let view = lark.message_view(&text).unwrap();
    assert_eq!(
        (view.edit_count, view.content["text"].as_str()),
        (1, Some("v2"))
    );

    assert_eq!(
        client.recall_message(&text).await.unwrap(),
        Recalled::Recalled
    );
    assert!(lark.message_view(&text).unwrap().recalled);
    // Recalled already (230011) and deleted (230110): the recall's goal holds.
    assert_eq!(
        client.recall_message(&text).await.unwrap(),
        Recalled::AlreadyGone
    );
    assert!(lark.mark_deleted(&card));
    assert_eq!(
        client.recall_message(&card).await.unwrap(),
        Recalled::AlreadyGone
    );
    let stats = lark.stats();
    assert_eq!(
        (
            stats.updates_accepted,
            stats.edits_accepted,
            stats.recalls_accepted
        ),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_change_is_f_msg() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = demo_client(&lark);
    let text = sent(&client, "text", r#"{"text":"v1"}"#, "lc-3").await;
    let card = sent(&client, "interactive", &shared_card("a"), "lc-4").await;
    let class_code = |e: LarkError| (e.class, e.code);

    // Not a card; 20 edits used; more than 14 days old; recalled.
    let e = client
        .update_card(&text, &shared_card("b"))
        .await
        .unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Message, Some(230001)));
    assert!(lark.set_edit_count(&text, 20));
    let e = client
        .edit_message(&text, "text", r#"{"text":"v2"}"#)
        .await
        .unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Message, Some(230072)));
    lark.advance_clock(Duration::from_secs(15 * 24 * 3600));
    let e = client
        .update_card(&card, &shared_card("b"))
        .await
        .unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Message, Some(230031)));
    let fresh = sent(&client, "interactive", &shared_card("a"), "lc-5").await;
    assert!(lark.recall(&fresh));
    let e = client
        .update_card(&fresh, &shared_card("b"))
        .await
        .unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Message, Some(230011)));

    // Bad content is the record's fault, not the message id's: a new message would fail too.
    let other = sent(&client, "interactive", &shared_card("a"), "lc-6").await;
    let e = client.update_card(&other, "{not json").await.unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Record, Some(230099)));
    // An unknown id cannot be recalled, and there is nothing to fall back to.
    let e = client.recall_message("om_unknown").await.unwrap_err();
    assert_eq!(class_code(e), (ErrorClass::Record, Some(230001)));
    // An id that is not one path segment never reaches Lark.
    let e = client.update_card("om_x/../y", "{}").await.unwrap_err();
    assert_eq!((e.class, e.http_status), (ErrorClass::Message, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_throttles_and_transient_answers_are_retryable() {
    let lark = emulator(Duration::from_secs(7200)).await;
    let client = demo_client(&lark);
    let card = sent(&client, "interactive", &shared_card("a"), "lc-7").await;
    let code = |code: i64, msg: &str, reset: Option<u64>| Fault::Code {
        http_status: 0,
        code,
        msg: msg.into(),
        ratelimit_reset_secs: reset,
    };
    lark.push_fault(FaultTarget::UpdateCard, code(230020, "", None));
    let e = client
        .update_card(&card, &shared_card("b"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Backoff);
    assert!(e.message_throttled(Call::UpdateCard));

    lark.push_fault(FaultTarget::UpdateCard, code(99991400, "", Some(2)));
    let e = client
        .update_card(&card, &shared_card("b"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.retry_after, e.throttle()),
        (
            ErrorClass::RateLimited,
            Some(Duration::from_secs(2)),
            Some(Throttle::App(Some(Duration::from_secs(2))))
        )
    );

    let internal = "Your request contains an invalid request parameter, ext=Internal Error";
    lark.push_fault(FaultTarget::Edit, code(230001, internal, None));
    let e = client
        .edit_message(&card, "text", r#"{"text":"x"}"#)
        .await
        .unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Backoff, Some(230001)));

    lark.push_fault(FaultTarget::Recall, Fault::Status { status: 503 });
    let e = client.recall_message(&card).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Backoff);
    // The faults did not touch the message: it still updates.
    client.update_card(&card, &shared_card("c")).await.unwrap();
}
