//! Unit tests of `callback.rs`, with the test vectors of lark-api.md §15.1.

use super::*;

const IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn verifier(key: Option<&str>, token: Option<&str>) -> Verifier {
    Verifier {
        encrypt_key: key.map(Secret::new),
        verification_token: token.map(Secret::new),
        max_age: Duration::from_secs(300),
    }
}

#[test]
fn the_documented_vectors() {
    // #1: the docs' sample in every language.
    assert_eq!(
        decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap(),
        b"hello world"
    );
    // #2: the AES key.
    let key: String = Sha256::digest(b"test key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        key,
        "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
    );
    // #4: a challenge encrypted with a fixed IV.
    let challenge = br#"{"challenge":"ajls384kdj1234","token":"vt","type":"url_verification"}"#;
    assert_eq!(
        encrypt("test key", IV, challenge),
        "AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHrdc/+YAHCBScAaLLdlIbBIMbmTizdcSfA1VhU+PS0tvK4c1SNQkYkKB4FfQJh6Mxcp7xxJdPsy08voTB3sP5j+"
    );
    // #5: the signature.
    assert_eq!(
        signature(
            "1700000000",
            "nonce123",
            "test key",
            br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#
        ),
        "669e3ed5328644f71370e3249f96af0fd17e5ed4d7b178c44f11f7997339e344"
    );
}

#[test]
fn bad_ciphertexts_are_refused() {
    assert!(matches!(
        decrypt("test key", "%%%"),
        Err(Rejected::Decrypt(_))
    ));
    assert!(matches!(
        decrypt("test key", "AAAA"),
        Err(Rejected::Decrypt(_))
    ));
    let other = encrypt("another key", IV, b"{}");
    assert!(matches!(
        decrypt("test key", &other),
        Err(Rejected::Decrypt(_))
    ));
}

fn event(token: &str) -> Vec<u8> {
    serde_json::json!({"schema": "2.0",
        "header": {"event_id": "e1", "token": token, "event_type": "im.message.receive_v1",
                   "create_time": "1700000000000", "app_id": "cli_1", "tenant_key": "t1"},
        "event": {}})
    .to_string()
    .into_bytes()
}

#[test]
fn an_encrypted_signed_event_opens_and_each_check_refuses() {
    let v = verifier(Some("test key"), Some("vt"));
    let plain = event("vt");
    let body = serde_json::json!({"encrypt": encrypt("test key", IV, &plain)})
        .to_string()
        .into_bytes();
    let sig = signature("1700000000", "n1", "test key", &body);
    let signed = Signed {
        timestamp: Some("1700000000"),
        nonce: Some("n1"),
        signature: Some(&sig),
    };
    assert_eq!(
        v.open(signed, &body, 1_700_000_010),
        Ok(Opened::Event(plain.clone()))
    );
    // A wrong signature, a missing one, another body under the same signature.
    let bad = Signed {
        signature: Some("00"),
        ..signed
    };
    assert_eq!(v.open(bad, &body, 1_700_000_010), Err(Rejected::Signature));
    let none = Signed {
        signature: None,
        ..signed
    };
    assert_eq!(v.open(none, &body, 1_700_000_010), Err(Rejected::Signature));
    let other = serde_json::json!({"encrypt": encrypt("test key", [9; 16], &plain)})
        .to_string()
        .into_bytes();
    assert_eq!(
        v.open(signed, &other, 1_700_000_010),
        Err(Rejected::Signature)
    );
    // Stale: ten minutes later (the signature still matches: a replay).
    assert_eq!(
        v.open(signed, &body, 1_700_000_600),
        Err(Rejected::Stale(Duration::from_secs(300)))
    );
    // The right signature, the wrong token inside.
    let wrong = event("not-vt");
    let body = serde_json::json!({"encrypt": encrypt("test key", IV, &wrong)})
        .to_string()
        .into_bytes();
    let sig = signature("1700000000", "n1", "test key", &body);
    let signed = Signed {
        signature: Some(&sig),
        ..signed
    };
    assert_eq!(v.open(signed, &body, 1_700_000_010), Err(Rejected::Token));
}

#[test]
fn plaintext_events_check_the_token_and_the_challenge_is_answered() {
    let v = verifier(None, Some("vt"));
    let none = Signed::default();
    assert_eq!(
        v.open(none, &event("vt"), 0),
        Ok(Opened::Event(event("vt")))
    );
    assert_eq!(v.open(none, &event("x"), 0), Err(Rejected::Token));
    let challenge = br#"{"challenge":"c-1","token":"vt","type":"url_verification"}"#;
    assert_eq!(
        v.open(none, challenge, 0),
        Ok(Opened::Challenge("c-1".into()))
    );
    let forged = br#"{"challenge":"c-1","token":"x","type":"url_verification"}"#;
    assert_eq!(v.open(none, forged, 0), Err(Rejected::Token));
    // An encrypted challenge, with no signature headers at all.
    let k = verifier(Some("test key"), Some("vt"));
    let body = serde_json::json!({"encrypt": encrypt("test key", IV, challenge)}).to_string();
    assert_eq!(
        k.open(none, body.as_bytes(), 0),
        Ok(Opened::Challenge("c-1".into()))
    );
    // Encrypted, but no key configured; not JSON.
    assert_eq!(
        v.open(none, body.as_bytes(), 0),
        Err(Rejected::NoEncryptKey)
    );
    assert!(matches!(
        v.open(none, b"nope", 0),
        Err(Rejected::Malformed(_))
    ));
    // A timestamp in milliseconds is read as such.
    let ms = Signed {
        timestamp: Some("1700000000000"),
        ..none
    };
    assert!(v.open(ms, &event("vt"), 1_700_000_001).is_ok());
    assert_eq!(Rejected::Token.label(), "token");
}

/// The self-test is made like Lark's requests and opened only when every check passes.
#[test]
fn a_self_test_passes_every_check_and_is_answered_with_its_nonce() {
    let v = verifier(Some("test key"), Some("vt"));
    let t = SelfTest::new(
        Some("test key"),
        Some("vt"),
        "cli_x",
        1_700_000_000,
        "n-1",
        IV,
    );
    fn signed(t: &SelfTest) -> Signed<'_> {
        Signed {
            timestamp: Some(&t.timestamp),
            nonce: Some(&t.nonce),
            signature: t.signature.as_deref(),
        }
    }
    assert!(t.body.starts_with(b"{\"encrypt\":"));
    let opened = v.open(signed(&t), &t.body, 1_700_000_005);
    assert_eq!(opened, Ok(Opened::SelfTest("n-1".into())));
    // Another key, another token, a wrong signature, an old timestamp: refused like an event.
    let other_key = SelfTest::new(Some("other"), Some("vt"), "cli_x", 1_700_000_000, "n", IV);
    assert!(v
        .open(signed(&other_key), &other_key.body, 1_700_000_000)
        .is_err());
    let other_token = SelfTest::new(Some("test key"), Some("x"), "cli_x", 1_700_000_000, "n", IV);
    let opened = v.open(signed(&other_token), &other_token.body, 1_700_000_000);
    assert_eq!(opened, Err(Rejected::Token));
    let mut forged = t.clone();
    forged.signature = Some("00".repeat(32));
    let opened = v.open(signed(&forged), &forged.body, 1_700_000_000);
    assert_eq!(opened, Err(Rejected::Signature));
    let opened = v.open(signed(&t), &t.body, 1_700_001_000);
    assert_eq!(opened, Err(Rejected::Stale(Duration::from_secs(300))));
    // Plaintext (no Encrypt Key): unsigned, the token checked.
    let plain = verifier(None, Some("vt"));
    let t = SelfTest::new(None, Some("vt"), "cli_x", 1_700_000_000, "n-2", IV);
    assert_eq!(t.signature, None);
    let opened = plain.open(signed(&t), &t.body, 1_700_000_000);
    assert_eq!(opened, Ok(Opened::SelfTest("n-2".into())));
}
