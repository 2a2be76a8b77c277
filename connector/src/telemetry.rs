//! Prometheus metrics: what an operator watches on a dashboard and alerts on.
//!
//! The `metrics` facade is used from wherever the event happens (the sink, the Lark client, the
//! limiter); the Prometheus recorder is installed once per process and rendered by the admin
//! server's `/metrics`. Every name is listed in [`METRICS`] with its type and help text, and
//! documented in `docs/operations.md`; the Grafana dashboard in `deploy/` is built on them.
//! Labels never carry secrets or message content, only topics, partitions, codes and classes.
//!
//! Each occurrence is one typed call. The sink's own events (a record received, finished or
//! dropped, a message delivered, a dead letter, the buffer's load, paused partitions) are methods
//! of [`SinkStats`], which also keeps the few figures the process reads back itself; the events of
//! the layers below (Lark answers, retries, rate-limit waits, look-ups, token fetches, consumer
//! lag, transform errors) are the free functions further down, since only `/metrics` reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// (name, type, help) of every metric lark-sink exports.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("lark_sink_records_received_total", "counter", "Kafka records received, by topic."),
    ("lark_sink_records_finished_total", "counter", "Records finished (every message delivered or dead-lettered), by topic."),
    ("lark_sink_records_dropped_total", "counter", "Records a transform turned into no message."),
    ("lark_sink_messages_delivered_total", "counter", "Messages Lark accepted, by msg_type."),
    ("lark_sink_lark_responses_total", "counter", "Lark answers by body code (\"0\" = success; \"http_<status>\" when the body had no code; \"transport\" for connection errors)."),
    ("lark_sink_retries_total", "counter", "Retries of a message, by retry class (R-hdr, R-bo)."),
    ("lark_sink_rate_limit_wait_seconds", "histogram", "Waits for permission to send, by limiter (receiver, app); _sum is the total time waited."),
    ("lark_sink_buffered_messages", "gauge", "Messages buffered in the receiver queues."),
    ("lark_sink_buffered_bytes", "gauge", "Bytes buffered in the receiver queues."),
    ("lark_sink_paused_partitions", "gauge", "Partitions paused (buffer full or paused through the admin API)."),
    ("lark_sink_consumer_lag", "gauge", "Records between the committed offset and the end of the partition, by topic and partition (from librdkafka statistics)."),
    ("lark_sink_dead_letters_total", "counter", "Dead letters written, by class (decode, transform, schema, F-rec, F-cfg, R-bo-exhausted, ...)."),
    ("lark_sink_token_refreshes_total", "counter", "Tenant access tokens fetched from Lark."),
    ("lark_sink_lookup_cache_total", "counter", "Phone / email → open_id resolutions, by kind (mobile, email) and result (hit: cached; miss: started a look-up; shared: joined one in flight)."),
    ("lark_sink_lookup_calls_total", "counter", "batch_get_id calls made (each resolves up to 50 mobiles and 50 emails)."),
    ("lark_sink_transform_errors_total", "counter", "Records a transform failed on, by transform name."),
    ("lark_sink_delivery_latency_seconds", "histogram", "From the record's Kafka timestamp to Lark's acceptance of its message."),
    ("lark_sink_keyed_messages_total", "counter", "Keyed messages (messageKey) finished, by op: sent, updated, replaced, recalled, superseded."),
    ("lark_sink_messages_total", "counter", "Messages finished, by outcome: delivered, updated, recalled, superseded, merged (into a storm digest), deduplicated, dead_lettered."),
    ("lark_sink_state_keys", "gauge", "Message states held in memory (one per sent Lark message an alert key may still update or recall)."),
    ("lark_sink_state_writes_total", "counter", "Acknowledged writes to the state changelog topic, by kind (entry, tombstone)."),
    ("lark_sink_state_restore_seconds", "histogram", "Time to restore one state partition from the changelog topic."),
    ("lark_sink_state_bad_records_total", "counter", "Changelog records a restore skipped as undecodable."),
    ("lark_sink_state_restoring_partitions", "gauge", "Source partitions paused until the state of their state partition is restored."),
    ("lark_sink_events_total", "counter", "Lark events and card callbacks received (lark.events.topic), by outcome: written, duplicate (a redelivery within the dedup window), failed (not written; answered 500: Lark pushes an event again, a click is not pushed again and its user sees an error)."),
    ("lark_sink_events_rejected_total", "counter", "Event callback requests refused by lark.events.mode=http, by reason: signature, token, stale (timestamp too far from now), decrypt, malformed."),
    ("lark_sink_events_connected", "gauge", "1 while the events long connection is open."),
    ("lark_sink_events_reconnects_total", "counter", "Times the events long connection was lost or refused and dialled again."),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns the handle `/metrics` renders.
/// `None` if another recorder was installed first (only possible in embedding programs).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "lark_sink_delivery_latency_seconds".into(),
                    ),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ],
                )
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "lark_sink_rate_limit_wait_seconds".into(),
                    ),
                    &[
                        0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0,
                    ],
                )
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "lark_sink_state_restore_seconds".into(),
                    ),
                    &[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
                )
                .ok()?
                .install_recorder()
                .ok()?;
            for (name, kind, help) in METRICS {
                match *kind {
                    "counter" => describe_counter!(*name, *help),
                    "gauge" => describe_gauge!(*name, *help),
                    _ => describe_histogram!(*name, metrics::Unit::Seconds, *help),
                }
            }
            Some(handle)
        })
        .clone()
}

/// The counter `name{label="value"}`. Building the key and looking it up in the registry on every
/// message was about 3% of the connector's CPU in the engine benchmark, so each thread keeps the
/// handles it used (as many as the registry holds anyway). Only once the recorder is installed:
/// handles taken before would stay no-ops.
fn labelled_counter(name: &'static str, label: &'static str, value: &str) -> metrics::Counter {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static HANDLES: RefCell<HashMap<&'static str, HashMap<String, metrics::Counter>>> =
            RefCell::new(HashMap::new());
    }
    if HANDLE.get().is_none() {
        return counter!(name, label => value.to_string());
    }
    HANDLES.with_borrow_mut(|h| {
        let by_value = h.entry(name).or_default();
        if let Some(c) = by_value.get(value) {
            return c.clone();
        }
        let c = counter!(name, label => value.to_string());
        by_value.insert(value.to_string(), c.clone());
        c
    })
}

/// The sink's events, one method per occurrence: each records its Prometheus metric and, only
/// where something in the process reads the figure back, an atomic too. One per process (shared
/// by the sink's restarts), so, like the metrics, the figures count from the process's start.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records finished (every message delivered or dead-lettered, or none to send): the demo
    /// stops the sink once all its sample records are.
    records_finished: AtomicU64,
    /// Dead letters written (one per failed message, or one per record that failed before it was
    /// split into messages): the demo reads back this many from its DLQ.
    dead_letters: AtomicU64,
}

impl SinkStats {
    /// A record taken from Kafka.
    pub fn received(&self, topic: &str) {
        labelled_counter("lark_sink_records_received_total", "topic", topic).increment(1);
    }

    /// A record finished: every message of it delivered or dead-lettered; its offset may move.
    pub fn finished(&self, topic: &str) {
        self.records_finished.fetch_add(1, Ordering::Relaxed);
        labelled_counter("lark_sink_records_finished_total", "topic", topic).increment(1);
    }

    /// A record a transform turned into no message: dropped, and so finished at once.
    pub fn dropped(&self, topic: &str) {
        counter!("lark_sink_records_dropped_total").increment(1);
        self.finished(topic);
    }

    /// A message Lark accepted; `timestamp_ms` is the record's Kafka timestamp, when it had one.
    pub fn delivered(&self, msg_type: &str, timestamp_ms: Option<i64>) {
        labelled_counter("lark_sink_messages_delivered_total", "msg_type", msg_type).increment(1);
        if let Some(ts) = timestamp_ms {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if now >= ts {
                histogram!("lark_sink_delivery_latency_seconds").record((now - ts) as f64 / 1000.0);
            }
        }
    }

    /// A dead letter the broker acknowledged, by class (`decode`, `F-rec`, `R-bo-exhausted`, ...).
    pub fn dead_lettered(&self, class: &str) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        counter!("lark_sink_dead_letters_total", "class" => class.to_string()).increment(1);
    }

    /// A keyed message finished in Lark, by what it did there (`sent`, `updated`, `replaced`,
    /// `recalled`), or without a call because a newer version took its place (`superseded`).
    pub fn keyed(&self, op: &'static str) {
        counter!("lark_sink_keyed_messages_total", "op" => op).increment(1);
    }

    /// A message finished, by how (`delivered`, `updated`, `recalled`, `superseded`, `merged`,
    /// `deduplicated`, `dead_lettered`): every message of every record ends in exactly one.
    pub fn message(&self, outcome: &'static str) {
        labelled_counter("lark_sink_messages_total", "outcome", outcome).increment(1);
    }

    /// What the receiver queues hold now (the load backpressure bounds).
    pub fn buffered(&self, messages: usize, bytes: usize) {
        gauge!("lark_sink_buffered_messages").set(messages as f64);
        gauge!("lark_sink_buffered_bytes").set(bytes as f64);
    }

    /// How many partitions are paused now (0 once resumed).
    pub fn paused(&self, partitions: usize) {
        gauge!("lark_sink_paused_partitions").set(partitions as f64);
    }

    /// Records finished so far.
    pub fn records_finished(&self) -> u64 {
        self.records_finished.load(Ordering::Relaxed)
    }

    /// Dead letters written so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }
}

/// One answer from Lark: its body code, or a stand-in when there was none.
pub fn lark_response(code: &str) {
    labelled_counter("lark_sink_lark_responses_total", "code", code).increment(1);
}

pub fn retry(class: &'static str) {
    counter!("lark_sink_retries_total", "class" => class).increment(1);
}

pub fn rate_limit_wait(limiter: &'static str, waited: Duration) {
    histogram!("lark_sink_rate_limit_wait_seconds", "limiter" => limiter)
        .record(waited.as_secs_f64());
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!("lark_sink_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

pub fn token_refresh() {
    counter!("lark_sink_token_refreshes_total").increment(1);
}

/// One phone / email resolution: `kind` is `mobile` or `email`, `result` `hit`, `miss` or `shared`.
pub fn lookup(kind: &'static str, result: &'static str) {
    counter!("lark_sink_lookup_cache_total", "kind" => kind, "result" => result).increment(1);
}

/// One `batch_get_id` call.
pub fn lookup_call() {
    counter!("lark_sink_lookup_calls_total").increment(1);
}

pub fn transform_error(transform: &str) {
    counter!("lark_sink_transform_errors_total", "transform" => transform.to_string()).increment(1);
}

/// How many message states the process holds now (after a restore, a write, a revoke).
pub fn state_keys(keys: usize) {
    gauge!("lark_sink_state_keys").set(keys as f64);
}

/// One acknowledged changelog write: an entry, or a tombstone (a recalled or expired message).
pub fn state_written(tombstone: bool) {
    let kind = if tombstone { "tombstone" } else { "entry" };
    labelled_counter("lark_sink_state_writes_total", "kind", kind).increment(1);
}

/// How many source partitions wait, paused, for a state restore now.
pub fn state_restoring(partitions: usize) {
    gauge!("lark_sink_state_restoring_partitions").set(partitions as f64);
}

/// One state partition restored in `elapsed`, `bad` records skipped. The partition and its key
/// count are in the restore's log line, not labels; the keys held show in `lark_sink_state_keys`.
pub fn state_restored(bad: u64, elapsed: Duration) {
    histogram!("lark_sink_state_restore_seconds").record(elapsed.as_secs_f64());
    if bad > 0 {
        counter!("lark_sink_state_bad_records_total").increment(bad);
    }
}

/// One event from Lark finished: `written`, `duplicate` or `failed`.
pub fn event(outcome: &'static str) {
    labelled_counter("lark_sink_events_total", "outcome", outcome).increment(1);
}

/// An event callback request refused (`signature`, `token`, `stale`, `decrypt`, `malformed`).
pub fn event_rejected(reason: &'static str) {
    labelled_counter("lark_sink_events_rejected_total", "reason", reason).increment(1);
}

/// The events long connection opened or closed.
pub fn events_connected(up: bool) {
    gauge!("lark_sink_events_connected").set(if up { 1.0 } else { 0.0 });
}

/// The events long connection is dialled again.
pub fn events_reconnect() {
    counter!("lark_sink_events_reconnects_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `events` on fresh stats under a recorder of its own (the process-wide one is never
    /// installed in unit tests, so `labelled_counter` keeps no handles) and returns the stats
    /// with the `/metrics` text they produced.
    fn recorded(events: impl FnOnce(&SinkStats)) -> (SinkStats, String) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let stats = SinkStats::default();
        metrics::with_local_recorder(&recorder, || events(&stats));
        (stats, handle.render())
    }

    /// The value of one series (`name` or `name{labels}`) in a `/metrics` text.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Asserts each `(series, value)` in a `/metrics` text.
    fn assert_series(text: &str, expected: &[(&str, f64)]) {
        for (series, v) in expected {
            assert_eq!(value(text, series), Some(*v), "{series} in\n{text}");
        }
    }

    #[test]
    fn finished_counts_the_record_for_the_demo_and_by_topic() {
        let (stats, text) = recorded(|s| {
            s.finished("alerts");
            s.finished("alerts");
            s.finished("audit");
        });
        assert_eq!((stats.records_finished(), stats.dead_letters()), (3, 0));
        assert_series(
            &text,
            &[
                ("lark_sink_records_finished_total{topic=\"alerts\"}", 2.0),
                ("lark_sink_records_finished_total{topic=\"audit\"}", 1.0),
            ],
        );
    }

    #[test]
    fn a_dropped_record_is_finished_too() {
        let (stats, text) = recorded(|s| s.dropped("alerts"));
        assert_eq!(stats.records_finished(), 1);
        assert_series(
            &text,
            &[
                ("lark_sink_records_dropped_total", 1.0),
                ("lark_sink_records_finished_total{topic=\"alerts\"}", 1.0),
            ],
        );
    }

    #[test]
    fn dead_lettered_counts_the_letters_for_the_demo_and_by_class() {
        let (stats, text) = recorded(|s| {
            s.dead_lettered("schema");
            s.dead_lettered("R-bo-exhausted");
            s.dead_lettered("schema");
        });
        assert_eq!((stats.dead_letters(), stats.records_finished()), (3, 0));
        assert_series(
            &text,
            &[
                ("lark_sink_dead_letters_total{class=\"schema\"}", 2.0),
                (
                    "lark_sink_dead_letters_total{class=\"R-bo-exhausted\"}",
                    1.0,
                ),
            ],
        );
    }

    #[test]
    fn the_other_events_only_feed_the_metrics() {
        let (stats, text) = recorded(|s| {
            s.received("alerts");
            s.delivered("text", None);
            s.delivered("post", Some(0));
            s.buffered(3, 4096);
            s.paused(2);
        });
        assert_eq!((stats.records_finished(), stats.dead_letters()), (0, 0));
        assert_series(
            &text,
            &[
                ("lark_sink_records_received_total{topic=\"alerts\"}", 1.0),
                ("lark_sink_messages_delivered_total{msg_type=\"text\"}", 1.0),
                ("lark_sink_messages_delivered_total{msg_type=\"post\"}", 1.0),
                ("lark_sink_buffered_messages", 3.0),
                ("lark_sink_buffered_bytes", 4096.0),
                ("lark_sink_paused_partitions", 2.0),
                // Only the message with a timestamp has a latency.
                ("lark_sink_delivery_latency_seconds_count", 1.0),
            ],
        );
        let (_, resumed) = recorded(|s| s.paused(0));
        assert_series(&resumed, &[("lark_sink_paused_partitions", 0.0)]);
    }

    #[test]
    fn every_sink_event_is_a_listed_metric() {
        let (_, text) = recorded(|s| {
            s.received("t");
            s.dropped("t");
            s.delivered("text", Some(0));
            s.dead_lettered("decode");
            s.buffered(1, 1);
            s.paused(1);
            s.message("merged");
        });
        let names = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect::<Vec<_>>();
        assert!(names.len() >= 9, "{text}");
        for name in names {
            let base = ["_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                METRICS.iter().any(|(n, _, _)| *n == base),
                "{name} is not in METRICS (docs/operations.md lists them)"
            );
        }
    }

    #[test]
    fn the_state_events_are_listed_metrics() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            state_keys(3);
            state_written(false);
            state_written(false);
            state_written(true);
            state_restored(0, Duration::from_millis(20));
            state_restored(2, Duration::from_millis(40));
            state_restoring(2);
        });
        let text = handle.render();
        assert_series(
            &text,
            &[
                ("lark_sink_state_keys", 3.0),
                ("lark_sink_state_writes_total{kind=\"entry\"}", 2.0),
                ("lark_sink_state_writes_total{kind=\"tombstone\"}", 1.0),
                ("lark_sink_state_restore_seconds_count", 2.0),
                ("lark_sink_state_bad_records_total", 2.0),
                ("lark_sink_state_restoring_partitions", 2.0),
            ],
        );
        for name in [
            "lark_sink_state_keys",
            "lark_sink_state_writes_total",
            "lark_sink_state_restore_seconds",
            "lark_sink_state_bad_records_total",
            "lark_sink_state_restoring_partitions",
        ] {
            assert!(METRICS.iter().any(|(n, _, _)| *n == name), "{name}");
        }
    }
}
