//! The Lark client against the emulator over real HTTP: the token cache's single-flight fetch,
//! its early refresh, and eviction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lark_sink::config::LarkConfig;
use lark_sink::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use lark_sink::lark::{ErrorClass, LarkClient};
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
