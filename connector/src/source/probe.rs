//! The one Kafka probe: a metadata request with the connector's own `kafka.*` settings, and the
//! errors librdkafka reported meanwhile. Start-up and `lark-sink check` both run it, so they ask
//! the same way and word the same failure the same way.
//!
//! librdkafka treats a failed SASL authentication or TLS handshake like a broker that went away:
//! it logs, waits and reconnects, forever. A wrong `kafka.sasl.password` or an untrusted broker
//! certificate never fixes itself, so before consuming anything lark-sink probes the cluster and,
//! if librdkafka reports an authentication or TLS error ([`Probe::access_error`]), stops with that
//! reason and the keys to check. A broker that is merely unreachable is not a configuration
//! error: start-up goes on and librdkafka keeps trying, as before. `check` renders the same
//! [`Probe`] as its `broker` line. librdkafka reports the *reason* of a failed connection only
//! through its global error callback, so [`ErrorCapture`] collects those reasons instead of
//! logging them. They name the mechanism, the user and the certificate problem, never the
//! password.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::ClientContext;

/// How long start-up waits for the cluster before going on without an answer.
pub const CHECK_TIME: Duration = Duration::from_secs(10);

/// How long each step serves librdkafka's queued events (see [`probe`]): long enough to serve
/// every event queued by then, short against the 500 ms metadata request.
const SERVE_EVENTS: Duration = Duration::from_millis(20);

/// What to check after an authentication failure: the one wording of start-up's error and of
/// `check`'s fix line.
const AUTHENTICATION_FIX: &str = "check kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.password, and that the user exists on the cluster";
/// What to check after a failed TLS handshake (as [`AUTHENTICATION_FIX`]).
const TLS_FIX: &str = "check kafka.security.protocol and kafka.ssl.ca.location: the broker's certificate must be signed by a CA in that file, for the host name in kafka.bootstrap.servers";

/// A Kafka connection problem that retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaAccessError {
    #[error("Kafka authentication failed ({fix}): {0}", fix = AUTHENTICATION_FIX)]
    Authentication(String),
    #[error("Kafka TLS handshake failed ({fix}): {0}", fix = TLS_FIX)]
    Tls(String),
}

impl KafkaAccessError {
    /// The keys to check, without librdkafka's reason (`check` shows that on its own line).
    pub fn fix(&self) -> &'static str {
        match self {
            KafkaAccessError::Authentication(_) => AUTHENTICATION_FIX,
            KafkaAccessError::Tls(_) => TLS_FIX,
        }
    }
}

/// One librdkafka error report: its code (if it has one) and its reason.
pub type ClientError = (Option<RDKafkaErrorCode>, String);

/// What a probe found out.
pub struct Probe {
    /// The cluster's answer, or why there is none.
    pub metadata: Result<Metadata, NoMetadata>,
    /// librdkafka's error reports while probing, each reason once, in the order they came.
    pub errors: Vec<ClientError>,
}

/// Why a probe has no metadata.
#[derive(Debug, thiserror::Error)]
pub enum NoMetadata {
    /// librdkafka refused the settings (start-up leaves that to the consumer's own message).
    #[error("cannot create a Kafka client: {0}")]
    Client(KafkaError),
    /// The last metadata request's error when the time ran out (or an access error came).
    #[error("{0}")]
    Request(KafkaError),
    /// The blocking task died; a bug, not an answer about the cluster.
    #[error("{0}")]
    Panicked(String),
}

/// How long a probe keeps asking after a failed metadata request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the cluster answers, an access error or the time limit: start-up gives a broker
    /// that is still coming up the whole time.
    Full,
    /// Also stops once librdkafka has given up on every broker: `check` reports at once, since
    /// waiting longer will not help.
    UntilAllBrokersDown,
}

impl Probe {
    /// The authentication or TLS failure among the errors, if any: the first one reported.
    pub fn access_error(&self) -> Option<KafkaAccessError> {
        self.errors.iter().find_map(|(code, reason)| match code {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(KafkaAccessError::Authentication(reason.clone()))
            }
            Some(RDKafkaErrorCode::SSL) => Some(KafkaAccessError::Tls(reason.clone())),
            _ => None,
        })
    }

    /// Whether waiting longer cannot change the outcome, under `wait`.
    fn conclusive(&self, wait: Wait) -> bool {
        let all_down = |(code, _): &ClientError| *code == Some(RDKafkaErrorCode::AllBrokersDown);
        self.access_error().is_some()
            || (wait == Wait::UntilAllBrokersDown && self.errors.iter().any(all_down))
    }
}

/// Asks the cluster for metadata with `kafka` (the connector's librdkafka settings), in short
/// steps, for up to `within`: until it answers, until an access error, or (per `wait`) until
/// librdkafka gives up on every broker.
pub async fn probe(kafka: &BTreeMap<String, String>, within: Duration, wait: Wait) -> Probe {
    let mut config = super::kafka::producer_config(kafka);
    // Asking about topics never creates them.
    config.set("allow.auto.create.topics", "false");
    tokio::task::spawn_blocking(move || {
        let capture = ErrorCapture::default();
        let producer: BaseProducer<ErrorCapture> = match config.create_with_context(capture.clone())
        {
            Ok(p) => p,
            Err(e) => return capture.probe(Err(NoMetadata::Client(e))),
        };
        let deadline = Instant::now() + within;
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            let answer = producer.client().fetch_metadata(None, step);
            // Serves the queued events: logs, and the error reports that call
            // `ErrorCapture::error`. rdkafka's `poll` serves events until its timeout has passed,
            // so with a zero timeout it serves only one; librdkafka queues several per failed
            // connection (a log line, the reason, "all brokers down"), so polling one at a time
            // fell behind and the reason sometimes never arrived within the time limit.
            producer.poll(SERVE_EVENTS);
            let probe = capture.probe(answer.map_err(NoMetadata::Request));
            if probe.metadata.is_ok() || probe.conclusive(wait) || Instant::now() >= deadline {
                return probe;
            }
        }
    })
    .await
    .unwrap_or_else(|e| Probe {
        metadata: Err(NoMetadata::Panicked(e.to_string())),
        errors: Vec::new(),
    })
}

/// A client context that collects librdkafka's global errors (the only place the *reason* of a
/// failed connection, TLS handshake or SASL login is reported) and keeps its log lines at debug
/// level: whoever probes reports what matters itself. Clones share the list, so the caller keeps
/// one to read after handing the other to the client.
#[derive(Clone, Default)]
pub struct ErrorCapture {
    errors: Arc<Mutex<Vec<ClientError>>>,
}

impl ErrorCapture {
    /// The errors so far, each reason once.
    pub fn errors(&self) -> Vec<ClientError> {
        self.errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn probe(&self, metadata: Result<Metadata, NoMetadata>) -> Probe {
        Probe {
            metadata,
            errors: self.errors(),
        }
    }
}

impl ClientContext for ErrorCapture {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", "probe: {fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("Kafka probe: {error}: {reason}");
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if !errors.iter().any(|(_, r)| r == reason) {
            errors.push((error.rdkafka_error_code(), reason.to_string()));
        }
    }
}

impl ProducerContext for ErrorCapture {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(errors: &[(RDKafkaErrorCode, &str)]) -> Probe {
        Probe {
            metadata: Err(NoMetadata::Panicked("none".into())),
            errors: errors
                .iter()
                .map(|(c, r)| (Some(*c), r.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_access_error_is_the_first_authentication_or_tls_report() {
        let p = probe_with(&[
            (RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down"),
            (RDKafkaErrorCode::SSL, "certificate verify failed"),
            (
                RDKafkaErrorCode::Authentication,
                "SASL authentication error",
            ),
        ]);
        let e = p.access_error().expect("an access error");
        assert_eq!(e, KafkaAccessError::Tls("certificate verify failed".into()));
        assert_eq!(e.fix(), TLS_FIX);
        assert!(e
            .to_string()
            .starts_with("Kafka TLS handshake failed (check "));
        assert!(e.to_string().ends_with("): certificate verify failed"));
        assert!(p.conclusive(Wait::Full));
    }

    #[test]
    fn an_unreachable_broker_ends_only_the_impatient_wait() {
        let p = probe_with(&[(RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down")]);
        assert_eq!(p.access_error(), None);
        assert!(!p.conclusive(Wait::Full));
        assert!(p.conclusive(Wait::UntilAllBrokersDown));
    }
}
