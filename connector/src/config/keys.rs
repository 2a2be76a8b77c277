//! The typed reader of the flat key → value map.
//!
//! Every section parser reads its keys through [`Keys`], so a value is trimmed, "empty means
//! unset" and every error wording ("is not a whole number of milliseconds", "is not true or
//! false", ...) is written once, and a default is always passed in from the type that owns it
//! rather than written here. [`Keys::new`] refuses unknown keys first, with a did-you-mean.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{key_err, ConfigError};

/// Keys lark-sink understands besides `kafka.*`, `lark.webhooks.*` and `transforms*`.
/// `docs/configuration.md` documents each one (a test below checks that it names them all).
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "connector.class",
    "topics",
    "topics.regex",
    "lark.app.id",
    "lark.app.secret",
    "lark.domain",
    "lark.request.timeout.ms",
    "lark.tls.ca.file",
    "lark.token.refresh.margin.ms",
    "lark.rate.app.per.second",
    "lark.rate.app.per.minute",
    "lark.rate.receiver.per.second",
    "lark.rate.webhook.per.second",
    "lark.rate.webhook.per.minute",
    "lark.rate.share",
    "lark.lookup.ttl.ms",
    "lark.lookup.negative.ttl.ms",
    "lark.email.resolve",
    "buffer.max.messages",
    "buffer.max.bytes",
    "buffer.pause.after.ms",
    "errors.tolerance",
    "errors.retry.timeout",
    "errors.retry.delay.max.ms",
    "errors.retry.delay.initial.ms",
    "errors.deadletterqueue.topic.name",
    "errors.deadletterqueue.context.headers.enable",
    "errors.deadletterqueue.topic.replication.factor",
    "errors.deadletterqueue.topic.partitions",
    "lark.result.topic",
    "lark.state.topic",
    "lark.state.topic.partitions",
    "lark.state.ttl.ms",
    "lark.events.topic",
    "lark.events.mode",
    "lark.events.dedup.window.ms",
    "lark.events.card.toast",
    "lark.events.card.failure.toast",
    "lark.events.listener",
    "lark.events.path",
    "lark.events.encrypt.key",
    "lark.events.verification.token",
    "lark.events.max.age.ms",
    "storm.dedup.window.ms",
    "storm.digest.after",
    "storm.digest.max.items",
    "offset.flush.interval.ms",
    "admin.listener",
    "admin.token",
    "shutdown.timeout.ms",
];

/// Whether `key` is one lark-sink reads: a [`KNOWN_KEYS`] entry or one of the passthrough
/// families (librdkafka's `kafka.*`, the webhooks, the transforms).
pub fn is_known_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
        || key.starts_with("kafka.")
        || key.starts_with("lark.webhooks.")
        || key == "transforms"
        || key.starts_with("transforms.")
}

/// The substituted config, checked for unknown keys, read with typed getters.
pub(crate) struct Keys<'a> {
    /// The values as substituted, untrimmed: `kafka.*` and `transforms*` are used as written.
    map: &'a BTreeMap<String, String>,
}

impl<'a> Keys<'a> {
    /// Refuses the first key lark-sink does not know (`transform_keys`: those the transform chain
    /// read), suggesting a known key within three edits.
    pub(crate) fn new(
        map: &'a BTreeMap<String, String>,
        transform_keys: &[String],
    ) -> Result<Self, ConfigError> {
        if let Some(key) = map
            .keys()
            .find(|k| !is_known_key(k) && !transform_keys.contains(k))
        {
            return Err(key_err(key, unknown_key_message(key)));
        }
        Ok(Keys { map })
    }

    /// Every key and value, as written after substitution (for the passthrough families).
    pub(crate) fn raw(&self) -> &'a BTreeMap<String, String> {
        self.map
    }

    /// A lark-sink key's value, trimmed; `None` when unset or blank.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.map
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// A `*.ms` key: a whole number of milliseconds.
    pub(crate) fn ms(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| key_err(key, format!("'{v}' is not a whole number of milliseconds"))),
        }
    }

    /// `true` or `false`.
    pub(crate) fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        self.choice(key, default, &[("true", true), ("false", false)])
            .map_err(|_| {
                let v = self.get(key).unwrap_or_default();
                key_err(key, format!("'{v}' is not true or false"))
            })
    }

    /// A whole number that must fit `T` (a quota in `u32`, a size in `usize`).
    pub(crate) fn count<T: TryFrom<u64>>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let n = v
            .parse::<u64>()
            .map_err(|_| key_err(key, format!("'{v}' is not a whole number")))?;
        T::try_from(n).map_err(|_| key_err(key, "is too large"))
    }

    /// A signed integer (`-1` means "the broker's default" for the DLQ's replication factor).
    pub(crate) fn integer(&self, key: &str, default: i32) -> Result<i32, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<i32>()
                .map_err(|_| key_err(key, format!("'{v}' is not an integer"))),
        }
    }

    /// One of a few words, each standing for a value: `'x' is not 'a' or 'b'` otherwise.
    pub(crate) fn choice<T: Copy>(
        &self,
        key: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        if let Some((_, value)) = options.iter().find(|(word, _)| *word == v) {
            return Ok(*value);
        }
        let words: Vec<String> = options.iter().map(|(w, _)| format!("'{w}'")).collect();
        let listed = match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        };
        Err(key_err(key, format!("'{v}' is not {listed}")))
    }
}

fn unknown_key_message(key: &str) -> String {
    let best = KNOWN_KEYS
        .iter()
        .map(|k| (strsim::levenshtein(k, key), *k))
        .min()
        .filter(|(d, _)| *d <= 3);
    match best {
        Some((_, k)) => format!("unknown key (did you mean '{k}'?)"),
        None => "unknown key (librdkafka settings go under 'kafka.')".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, with};
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = err(with("errors.tolerence", "all"));
        assert!(
            e.contains("'errors.tolerence'") && e.contains("did you mean 'errors.tolerance'"),
            "{e}"
        );
        let e = err(with("bootstrap.servers", "x"));
        assert!(
            e.contains("'bootstrap.servers'") && e.contains("kafka."),
            "{e}"
        );
    }

    #[test]
    fn getters_name_the_key_and_the_value() {
        let map: BTreeMap<String, String> = [
            ("a.ms", " 250 "),
            ("b", "yes"),
            ("c", "5000000000"),
            ("d", "x"),
            ("e", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let keys = Keys { map: &map };
        assert_eq!(
            keys.ms("a.ms", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            keys.ms("e", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(1),
            "blank = unset"
        );
        let e = keys.flag("b", false).unwrap_err().to_string();
        assert_eq!(e, "config key 'b': 'yes' is not true or false");
        let e = keys.count::<u32>("c", 0).unwrap_err().to_string();
        assert_eq!(e, "config key 'c': is too large");
        assert_eq!(keys.count::<u64>("c", 0).unwrap(), 5_000_000_000);
        let e = keys
            .choice("d", 0, &[("a", 1), ("b", 2), ("c", 3)])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "config key 'd': 'x' is not 'a', 'b' or 'c'");
        assert_eq!(keys.choice("missing", 7, &[("a", 1)]).unwrap(), 7);
    }

    /// "Keep the two in step", checked: every key lark-sink reads is in the reference page.
    #[test]
    fn docs_name_every_known_key() {
        let docs = include_str!("../../../docs/configuration.md");
        for key in KNOWN_KEYS {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/configuration.md does not document `{key}`"
            );
        }
    }
}
