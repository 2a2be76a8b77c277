//! The example configs under deploy/examples/ must stay valid as the config schema evolves.

use lark_sink::config::{ConnectorConfig, Tolerance};

#[test]
fn every_example_config_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let secret =
        std::env::temp_dir().join(format!("lark-sink-example-secret-{}", std::process::id()));
    std::fs::write(&secret, "s\n").unwrap();
    std::env::set_var("LARK_APP_ID", "cli_example");
    std::env::set_var("LARK_APP_SECRET", "s");
    std::env::set_var("KAFKA_PASSWORD", "p");
    std::env::set_var(
        "LARK_ONCALL_HOOK_URL",
        "https://open.feishu.cn/open-apis/bot/v2/hook/x",
    );
    std::env::set_var("LARK_ONCALL_HOOK_SECRET", "s");
    std::env::set_var("LARK_RELEASES_HOOK_TOKEN", "t");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // Point the mounted-secret path of the examples at a file that exists here.
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "/run/secrets/lark-app-secret",
            &secret.display().to_string(),
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cfg =
            ConnectorConfig::from_json(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.errors.tolerance, Tolerance::All, "{}", path.display());
        assert!(!cfg.lark.app_secret.is_empty() || !cfg.lark.webhooks.is_empty());
        // This librdkafka build must accept the example's Kafka settings (SASL_SSL with SCRAM
        // needs librdkafka built with OpenSSL). Creating a client checks them without connecting.
        let mut client = rdkafka::ClientConfig::new();
        for (k, v) in cfg.kafka.iter() {
            client.set(k, v);
        }
        client
            .create::<rdkafka::consumer::BaseConsumer>()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: librdkafka rejects the Kafka settings: {e}",
                    path.display()
                )
            });
        seen += 1;
    }
    assert!(seen >= 3, "expected the example configs in {dir}");
}
