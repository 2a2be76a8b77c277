//! The user directory (phone / email → open_id) against the emulator over real HTTP: batching of
//! distinct look-ups, single-flight for one address, the found and not-found TTLs, and how a
//! failed `batch_get_id` reaches its waiters. Call counts are read from the emulator, so they
//! are what went over the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use lark_sink::config::LarkConfig;
use lark_sink::emulator::{
    Directory, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultTarget,
};
use lark_sink::lark::{ErrorClass, LarkClient, LookupConfig, UserDirectory};
use lark_sink::secret::Secret;

async fn emulator(users: usize) -> EmulatorHandle {
    let cfg = EmulatorConfig {
        directory: Directory::with_generated(users, 0),
        ..EmulatorConfig::default()
    };
    Emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

fn client(lark: &EmulatorHandle) -> Arc<LarkClient> {
    let cfg = LarkConfig {
        app_id: "cli_demo_app".into(),
        app_secret: Secret::new("demo-secret"),
        base_url: lark.base_url(),
        request_timeout: Duration::from_secs(5),
        token_refresh_margin: Duration::from_secs(180),
        retry_delay_max: Duration::from_secs(1),
        retry_delay_initial: Duration::from_millis(50),
        retry_timeout: Some(Duration::from_secs(5)),
        webhooks: Default::default(),
        lookup_ttl: Duration::from_secs(3600),
        lookup_negative_ttl: Duration::from_secs(300),
        email_resolve: false,
        tls_ca: Vec::new(),
    };
    Arc::new(LarkClient::new(&cfg).unwrap())
}

fn directory(lark: &EmulatorHandle, cfg: LookupConfig) -> UserDirectory {
    UserDirectory::new(client(lark), cfg)
}

/// The generated users' numbers and addresses (`Directory::with_generated`).
fn mobile(i: usize) -> String {
    format!("+861390000{i:04}")
}

// The look-ups below are polled together by `join_all` on a current-thread runtime, so every one
// of them is registered before any batch timer can fire: the batch counts are exact.

#[tokio::test]
async fn distinct_concurrent_lookups_share_batches_of_50() {
    let lark = emulator(200).await;
    let dir = directory(&lark, LookupConfig::default());
    let ids = join_all((0..120).map(|i| {
        let dir = &dir;
        async move { dir.open_id_by_mobile(&mobile(i)).await }
    }))
    .await;
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(id.unwrap(), format!("ou_gen_{i}"), "mobile {i}");
    }
    let asked = lark.lookups();
    assert_eq!(asked.calls, 3, "120 mobiles = 50 + 50 + 20");
    assert_eq!(dir.calls(), 3);
    assert!((0..120).all(|i| asked.mobile(&mobile(i)) == 1), "{asked:?}");

    // Emails and mobiles are separate lists of one call: 50 + 50 fit in one.
    let both = join_all((0..100).map(|i| {
        let dir = &dir;
        async move {
            if i % 2 == 0 {
                dir.open_id_by_email(&format!("GEN{i}@Example.com")).await
            } else {
                dir.open_id_by_email(&format!("gen{i}@example.com")).await
            }
        }
    }))
    .await;
    assert!(both.iter().all(Result::is_ok), "{both:?}");
    assert_eq!(lark.lookups().calls, 5, "100 emails = 2 more calls");
    // 50 new emails and 50 new mobiles, with cached ones among them: one more call.
    let mixed = join_all((0..150).map(|i| {
        let dir = &dir;
        async move {
            match i {
                0..50 => {
                    dir.open_id_by_email(&format!("gen{}@example.com", i + 100))
                        .await
                }
                50..100 => dir.open_id_by_mobile(&mobile(i + 70)).await,
                _ => dir.open_id_by_mobile(&mobile(i - 100)).await,
            }
        }
    }))
    .await;
    assert!(mixed.iter().all(Result::is_ok), "{mixed:?}");
    assert_eq!(
        lark.lookups().calls,
        6,
        "50 emails + 50 mobiles fit in one call"
    );
    lark.shutdown().await;
}

#[tokio::test]
async fn the_same_address_is_looked_up_once() {
    let lark = emulator(0).await;
    let dir = directory(&lark, LookupConfig::default());
    // Different spellings of one number and one address share the look-up.
    let spellings = ["+8613800000001", "13800000001", "+86 138-0000-0001"];
    let ids = join_all((0..90).map(|i| {
        let dir = &dir;
        async move {
            if i % 2 == 0 {
                dir.open_id_by_mobile(spellings[i % 3]).await
            } else {
                dir.open_id_by_email("Bob@Example.com").await
            }
        }
    }))
    .await;
    for (i, id) in ids.into_iter().enumerate() {
        let want = if i % 2 == 0 { "ou_alice" } else { "ou_bob" };
        assert_eq!(id.unwrap(), want);
    }
    let asked = lark.lookups();
    assert_eq!(asked.calls, 1, "{asked:?}");
    assert_eq!(asked.mobile("+8613800000001"), 1);
    assert_eq!(asked.email("bob@example.com"), 1);
    // Later requests are cache hits.
    assert_eq!(
        dir.open_id_by_mobile("13800000001").await.unwrap(),
        "ou_alice"
    );
    assert_eq!(lark.lookups().calls, 1);
    lark.shutdown().await;
}

#[tokio::test]
async fn not_found_is_cached_for_the_shorter_ttl() {
    let lark = emulator(0).await;
    let dir = directory(
        &lark,
        LookupConfig {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_millis(300),
            ..LookupConfig::default()
        },
    );
    // Unknown, and known but outside the app's availability (Carol): both "not found".
    for _ in 0..2 {
        let e = dir.open_id_by_mobile("+15550000000").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Record);
        assert!(
            e.msg.contains("+15550000000") && e.msg.contains("not visible to this app"),
            "{e}"
        );
        let e = dir.open_id_by_email("carol@example.com").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Record);
        assert_eq!(
            dir.open_id_by_mobile("13800000002").await.unwrap(),
            "ou_bob"
        );
    }
    let asked = lark.lookups();
    assert_eq!(asked.mobile("+15550000000"), 1, "not found is cached");
    assert_eq!(asked.email("carol@example.com"), 1);
    assert_eq!(asked.mobile("+8613800000002"), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(dir.open_id_by_mobile("+15550000000").await.is_err());
    assert_eq!(
        dir.open_id_by_mobile("13800000002").await.unwrap(),
        "ou_bob"
    );
    let asked = lark.lookups();
    assert_eq!(
        asked.mobile("+15550000000"),
        2,
        "asked again after the negative TTL"
    );
    assert_eq!(asked.mobile("+8613800000002"), 1, "found is still cached");

    // Not a phone number at all: refused without asking Lark.
    let e = dir.open_id_by_mobile("on-call").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Record);
    assert!(e.msg.contains("not a phone number"), "{e}");
    assert_eq!(lark.lookups().calls, asked.calls);
    lark.shutdown().await;
}

#[tokio::test]
async fn found_entries_expire_after_the_ttl() {
    let lark = emulator(0).await;
    let dir = directory(
        &lark,
        LookupConfig {
            ttl: Duration::from_millis(300),
            negative_ttl: Duration::from_millis(300),
            ..LookupConfig::default()
        },
    );
    assert_eq!(
        dir.open_id_by_email("alice@example.com").await.unwrap(),
        "ou_alice"
    );
    assert_eq!(
        dir.open_id_by_email("alice@example.com").await.unwrap(),
        "ou_alice"
    );
    assert_eq!(lark.lookups().email("alice@example.com"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        dir.open_id_by_email("alice@example.com").await.unwrap(),
        "ou_alice"
    );
    assert_eq!(lark.lookups().email("alice@example.com"), 2);
    lark.shutdown().await;
}

#[tokio::test]
async fn a_failed_call_reaches_every_waiter_and_is_not_cached() {
    let lark = emulator(10).await;
    let dir = directory(&lark, LookupConfig::default());
    // A throttle, then a missing scope: each fails the whole batch with its class.
    lark.push_fault(
        FaultTarget::BatchGetId,
        Fault::Code {
            code: 99991400,
            http_status: 0,
            msg: String::new(),
            ratelimit_reset_secs: Some(1),
        },
    );
    let results = join_all((0..10).map(|i| {
        let dir = &dir;
        async move { dir.open_id_by_mobile(&mobile(i % 4)).await }
    }))
    .await;
    assert_eq!(lark.lookups().calls, 1);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.class, ErrorClass::RateLimited, "{e}");
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    }
    lark.push_fault(
        FaultTarget::BatchGetId,
        Fault::Code {
            code: 99991672,
            http_status: 0,
            msg: String::new(),
            ratelimit_reset_secs: None,
        },
    );
    let e = dir.open_id_by_email("alice@example.com").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Fatal);
    assert!(e.msg.contains("contact:user.id:readonly"), "{e}");
    // Nothing failed was cached: the next attempt asks again and succeeds.
    assert_eq!(dir.open_id_by_mobile(&mobile(0)).await.unwrap(), "ou_gen_0");
    assert_eq!(
        dir.open_id_by_email("alice@example.com").await.unwrap(),
        "ou_alice"
    );
    assert_eq!(lark.lookups().calls, 4);
    lark.shutdown().await;
}
