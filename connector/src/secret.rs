//! A string that must never reach logs, metrics or the dead-letter topic.
//!
//! App secrets, tenant tokens and webhook secrets are wrapped in [`Secret`] as soon as they are
//! read, so a stray `{:?}` or `{}` prints `***` instead of the value. Only the HTTP layer calls
//! [`Secret::expose`]. Config values that are shown back (the admin API, a `{:?}` of the
//! librdkafka properties) are masked by key, and [`is_secret_key`] is the one place that decides
//! which keys are secrets.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that must send it (an HTTP request body or header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Whether a config key holds a credential, so that its value is shown as `***`. The one rule
/// behind every place that prints config values: `GET /connectors/{name}`, the admin
/// `/config/validate` echo and the `Debug` of the librdkafka properties; separate lists drifted
/// apart and `/config/validate` echoed `kafka.ssl.key.pem`. A key is matched case-insensitively,
/// with or without its `kafka.` prefix, on name fragments rather than exact keys: a credential
/// shown is a leak, while a harmless value hidden (`lark.token.refresh.margin.ms`) is not, so a
/// librdkafka property added later (`*.password`, `*.secret`, ...) is covered without a change here.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS.iter().any(|f| key.contains(f))
}

/// What the name of a credential key contains (see [`is_secret_key`]).
const SECRET_KEY_FRAGMENTS: &[&str] = &[
    // lark.app.secret, lark.webhooks.<name>.secret, kafka.sasl.oauthbearer.client.secret
    "secret",
    // kafka.sasl.password, kafka.ssl.key.password, kafka.ssl.keystore.password, ...
    "password",
    // kafka.sasl.oauthbearer.assertion.private.key.passphrase
    "passphrase",
    // admin.token, lark.webhooks.<name>.token
    "token",
    // librdkafka's unsecured-JWT settings, which it marks sensitive
    "oauthbearer.config",
    // an inline private key: kafka.ssl.key.pem, kafka.sasl.oauthbearer.assertion.private.key.pem
    "key.pem",
    // lark.events.encrypt.key: the app's Encrypt Key (decrypts and signs its event callbacks)
    "encrypt.key",
    // librdkafka's in-memory private key property
    "ssl_key",
    // every option of a custom bot is a credential: .secret, .token, and .url, which ends in the
    // hook token (`…/bot/v2/hook/<token>`); whoever has it can post to the group
    "lark.webhooks.",
];

/// A config value as the admin API shows it: `***` for the literal value of a secret key. A value
/// that is exactly one `${env:..}`/`${file:..}` reference is shown as written: it says where the
/// secret is, not what it is, and is what an operator needs to see. A value mixing references
/// with literal text is masked, since the text may be part of the secret.
pub fn mask_config_value(key: &str, value: &str) -> String {
    let reference = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|inner| !inner.contains('}') && !inner.contains("${"));
    if is_secret_key(key) && !reference {
        "***".into()
    } else {
        value.to_string()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn is_secret_key_covers_every_credential_key() {
        // As written in the config file, and (for librdkafka) as `KafkaProps` holds them,
        // without the `kafka.` prefix.
        let secret = [
            "lark.app.secret",
            "lark.webhooks.ops.secret",
            "lark.webhooks.ops.token",
            "admin.token",
            "kafka.sasl.password",
            "kafka.ssl.key.password",
            "kafka.ssl.key.pem",
            "kafka.ssl.keystore.password",
            "kafka.ssl.truststore.password",
            "kafka.sasl.oauthbearer.client.secret",
            "kafka.sasl.oauthbearer.client.credentials.client.secret",
            "kafka.sasl.oauthbearer.config",
            "kafka.sasl.oauthbearer.assertion.private.key.pem",
            "kafka.sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "sasl.oauthbearer.config",
            "ssl_key",
            "kafka.SASL.Password",
            "lark.webhooks.ops.url",
            "LARK.WEBHOOKS.ops.URL",
        ];
        for k in secret {
            assert!(is_secret_key(k), "{k} must be secret");
        }
        let public = [
            "name",
            "topics",
            "topics.regex",
            "lark.app.id",
            "lark.domain",
            "admin.listener",
            "kafka.bootstrap.servers",
            "kafka.sasl.mechanism",
            "kafka.sasl.username",
            "kafka.ssl.ca.location",
            "kafka.ssl.key.location",
            "kafka.ssl.certificate.pem",
            "kafka.ssl.ca.pem",
            "transforms.route.type",
        ];
        for k in public {
            assert!(!is_secret_key(k), "{k} is not a secret");
        }
    }

    #[test]
    fn literal_secrets_are_masked_references_shown() {
        assert_eq!(mask_config_value("lark.app.secret", "s3cret"), "***");
        assert_eq!(mask_config_value("kafka.ssl.key.pem", "-----BEGIN"), "***");
        assert_eq!(
            mask_config_value("lark.app.secret", "${env:LARK_APP_SECRET}"),
            "${env:LARK_APP_SECRET}"
        );
        assert_eq!(
            mask_config_value("kafka.sasl.password", "${file:/run/secrets/kafka}"),
            "${file:/run/secrets/kafka}"
        );
        // Literal text between references may be part of the secret.
        assert_eq!(
            mask_config_value("kafka.sasl.password", "${env:A}pw-part${env:B}"),
            "***"
        );
        assert_eq!(mask_config_value("lark.app.id", "cli_x"), "cli_x");
    }
}
