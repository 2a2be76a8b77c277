//! lark-sink: a Kafka → Lark/Feishu IM sink connector.
//!
//! The modules read in the order a record travels:
//!
//! 1. [`config`]: the Kafka Connect style JSON config, with `${env:..}` / `${file:..}` secrets.
//! 2. [`source`]: the Kafka consumer and the per-partition offset tracker (at-least-once).
//! 3. [`envelope`]: the message types ([`envelope::Envelope`], [`envelope::Receiver`] with its
//!    queue and rate keys) and the pure steps from bytes to envelopes; [`envelope::decode`]: record
//!    bytes → JSON value (one envelope, or an array of them); [`envelope::prepare`]: the one
//!    composition of decode, transform, split and validate for a record.
//! 4. [`transform`]: runs that preparation with the user's transform chain (the
//!    `lark-sink-transforms` crate) on a blocking thread, and rebuilds a crashed chain.
//! 5. [`envelope::validate`]: the envelope JSON Schema + addressing and per-`msg_type` content
//!    checks and size limits.
//! 6. [`lark`]: the Lark Open Platform client (token cache, send, response classification).
//! 7. [`delivery`]: sends one message with retries, deciding deliver / retry / dead-letter.
//! 8. [`dlq`]: the dead-letter topic writer (`__connect.errors.*` headers).
//! 9. [`results`]: the optional result topic (one JSON outcome per message).
//! 10. [`sink`]: wires 2–9 together and stores offsets only after the outcome is durable: start-up
//!     (`sink/startup.rs`), the consumer loop (`intake.rs`), when to pause (`backpressure.rs`,
//!     pure), what Lark's final answer means for a message (`verdict.rs`, pure), and what happens
//!     after Lark answers (`settle.rs`).
//!
//! Beside the path: [`state`] (which Lark message an alert key was sent as, kept in a compacted
//! changelog topic and restored per partition, for updates and recalls in place), [`telemetry`] (the Prometheus metrics, one call per event), [`control`] and
//! [`admin`] (the operator's surface of a running process), [`secret`] (values that print as
//! `***`), [`record`] (an owned Kafka record and its message uuid).
//!
//! The way back: [`inbound`] writes Lark's events and card clicks to `lark.events.topic`,
//! received over the long connection of [`lark::events`].
//!
//! Dependencies point one way (docs/ARCHITECTURE.md, "Dependency rules"; checked by
//! `connector/tests/dependencies.rs`): `lark` knows nothing about Kafka, `source` nothing about
//! Lark, and only `source::offsets` stores offsets.
//!
//! [`commands`] holds the subcommands of the binary, one module each: among them
//! [`commands::demo`] runs the whole path on an embedded broker and the Lark emulator, and
//! [`commands::check`] tests a config against the real broker and Lark before going live.
//!
//! [`envelope`] (decode, validate, prepare), [`dlq::DeadLetter`], [`lark::classify`] and
//! [`lark::address`] are pure and build without the default `runtime` feature, for the fuzz targets in `fuzz/`; everything else
//! needs it.

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod commands;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod control;
#[cfg(feature = "runtime")]
pub mod delivery;
pub mod dlq;
pub mod envelope;
#[cfg(feature = "runtime")]
pub mod inbound;
pub mod lark;
#[cfg(feature = "runtime")]
pub mod record;
#[cfg(feature = "runtime")]
pub mod results;
#[cfg(feature = "runtime")]
pub mod secret;
#[cfg(feature = "runtime")]
pub mod sink;
#[cfg(feature = "runtime")]
pub mod source;
#[cfg(feature = "runtime")]
pub mod state;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod transform;

#[cfg(feature = "runtime")]
pub use lark_emulator as emulator;
