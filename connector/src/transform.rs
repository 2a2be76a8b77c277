//! The transform step of the running sink: one record's whole preparation
//! ([`prepare::record`]: decode → transform → split → validate) with the configured chain, off the
//! async runtime.
//!
//! The preparation itself is pure and lives in [`crate::envelope::prepare`], where the corpus test,
//! `transform test` and the fuzz targets run it too. What only the running sink needs is here:
//!
//! - a record with transforms is prepared on a blocking thread ([`tokio::task::spawn_blocking`]),
//!   so a slow script never stalls the runtime (the script's own timeout still bounds it);
//! - the engines keep interpreter state, so one [`Chain`] is owned here and lent to each record;
//! - an engine that panics takes its chain with it: the record is dead-lettered (`TRANSFORMATION`,
//!   "transform engine crashed"), and a fresh chain is built for the next record. If even that
//!   fails, the next record is dead-lettered with the reason and the one after tries again; the
//!   runner never falls back to "no transforms", which would send records untransformed.
//!
//! A record without transforms is prepared in place: there is nothing slow to move off the loop,
//! and a hop to a blocking thread per record would cost more than the preparation.

use std::sync::Arc;

use lark_sink_transforms::{Chain, TransformError};

use crate::config::ConfigError;
use crate::envelope::prepare::{self, Prepared};
use crate::envelope::validate::EnvelopeValidator;
use crate::record::SourceRecord;
use crate::telemetry;

/// Builds a fresh chain from the configuration: the keys were checked at start-up, but a script
/// file can vanish or change afterwards, so this can fail.
pub type Rebuild = Box<dyn Fn() -> Result<Chain, ConfigError> + Send + Sync>;

/// Prepares the sink's records, one at a time, with the one transform chain.
pub struct TransformRunner {
    /// Shared with the blocking thread that prepares a record.
    validator: Arc<EnvelopeValidator>,
    /// `None` after an engine crashed: rebuilt for the next record.
    chain: Option<Chain>,
    rebuild: Rebuild,
}

impl TransformRunner {
    pub fn new(validator: EnvelopeValidator, chain: Chain, rebuild: Rebuild) -> Self {
        TransformRunner {
            validator: Arc::new(validator),
            chain: Some(chain),
            rebuild,
        }
    }

    /// Decodes, transforms and validates one record. A failure is a `Prepared::Failed` or a failed
    /// message inside it, never an error: the caller dead-letters it (or stops the connector).
    pub async fn prepare(&mut self, record: &SourceRecord) -> Prepared {
        // No transforms configured. (`None` is a chain lost to an engine crash: it is rebuilt
        // below; skipping it instead would send records untransformed from then on.)
        if self.chain.as_ref().is_some_and(Chain::is_empty) {
            return prepare::untransformed(&self.validator, record.value.as_deref());
        }
        let mut chain = match self.chain.take().map_or_else(|| (self.rebuild)(), Ok) {
            Ok(chain) => chain,
            // The record is still decoded first: a value that cannot be read is the producer's
            // fault (`VALUE_CONVERTER`), whatever state the transforms are in.
            Err(e) => {
                let error = chain_error(format!("cannot rebuild the transform chain: {e}"));
                return prepare::record(
                    &self.validator,
                    record.value.as_deref(),
                    Some(|_| failed(error)),
                );
            }
        };
        let validator = self.validator.clone();
        // Copied for the blocking thread: the record itself stays with the caller, which needs it
        // whatever happens here (a dead letter carries its bytes).
        let value = record.value.clone();
        let meta = record.meta();
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = prepare::record(
                &validator,
                value.as_deref(),
                Some(|v| {
                    let outputs = chain.apply(v, &meta);
                    if let Err(e) = &outputs {
                        telemetry::transform_error(&e.transform);
                    }
                    outputs
                }),
            );
            (chain, prepared)
        })
        .await;
        match prepared {
            Ok((chain, prepared)) => {
                self.chain = Some(chain);
                prepared
            }
            // The engine panicked: the chain is gone; a fresh one is built for the next record.
            Err(e) => {
                let error = chain_error(format!("transform engine crashed: {e}"));
                telemetry::transform_error(&error.transform);
                Prepared::Failed(prepare::transform_failure(&error))
            }
        }
    }
}

/// A failure of the chain as a whole rather than of one of its transforms.
fn chain_error(message: String) -> TransformError {
    TransformError {
        transform: "chain".into(),
        message,
        line: None,
    }
}

/// `error` as a transform's outcome, counted like one.
fn failed(error: TransformError) -> Result<Vec<serde_json::Value>, TransformError> {
    telemetry::transform_error(&error.transform);
    Err(error)
}
