//! The start-up check of the Kafka connection, the Kafka twin of the tenant-token check.
//!
//! librdkafka treats a failed SASL authentication or TLS handshake like a broker that went away:
//! it logs, waits and reconnects, forever. A wrong `kafka.sasl.password` or an untrusted broker
//! certificate never fixes itself, so before consuming anything lark-sink asks the cluster for
//! metadata with the connector's own `kafka.*` settings and, if librdkafka reports an
//! authentication or TLS error, stops with that reason and the keys to check. A broker that is
//! merely unreachable is not a configuration error: start-up goes on and librdkafka keeps trying,
//! as before. librdkafka's reasons name the mechanism, the user and the certificate problem, never
//! the password.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientContext;

/// How long start-up waits for the cluster before going on without an answer.
pub const CHECK_TIME: Duration = Duration::from_secs(10);

/// A Kafka connection problem that retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaAccessError {
    #[error("Kafka authentication failed (check kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.password, and that the user exists on the cluster): {0}")]
    Authentication(String),
    #[error("Kafka TLS handshake failed (check kafka.security.protocol and kafka.ssl.ca.location: the broker's certificate must be signed by a CA in that file, for the host name in kafka.bootstrap.servers): {0}")]
    Tls(String),
}

/// Records the first authentication or TLS error librdkafka reports; everything else is debug.
#[derive(Default)]
struct ProbeContext {
    fatal: Mutex<Option<KafkaAccessError>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let found = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => {
                Some(KafkaAccessError::Authentication(reason.to_string()))
            }
            Some(RDKafkaErrorCode::SSL) => Some(KafkaAccessError::Tls(reason.to_string())),
            _ => None,
        };
        match found {
            Some(f) => {
                let mut slot = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(f);
            }
            None => tracing::debug!("Kafka start-up check: {error}: {reason}"),
        }
    }

    // The check reports what matters itself; librdkafka's own lines would repeat it.
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", "start-up check: {fac} {message}");
    }
}

impl rdkafka::producer::ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Asks the cluster for metadata with `kafka` (the connector's librdkafka settings) for up to
/// `within`. `Err` only for an authentication or TLS failure; no answer at all is `Ok` (logged).
pub async fn check(
    kafka: &BTreeMap<String, String>,
    within: Duration,
) -> Result<(), KafkaAccessError> {
    let config = crate::dlq::producer_config(kafka);
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer<ProbeContext> =
            match config.create_with_context(ProbeContext::default()) {
                Ok(p) => p,
                // A bad property: the consumer, created next, reports it with its own message.
                Err(_) => return Ok(()),
            };
        let deadline = Instant::now() + within;
        loop {
            let answered = producer
                .client()
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok();
            // Serves the error callbacks.
            producer.poll(Duration::ZERO);
            let fatal = producer
                .context()
                .fatal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(f) = fatal {
                return Err(f);
            }
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "Kafka did not answer within {within:?} at start-up; consuming anyway (librdkafka keeps reconnecting)"
                );
                return Ok(());
            }
        }
    })
    .await
    .unwrap_or(Ok(()))
}
