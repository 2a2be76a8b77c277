//! lark-sink: a Kafka → Lark/Feishu IM sink connector.
//!
//! The modules read in the order a record travels:
//!
//! 1. [`config`]: the Kafka Connect style JSON config, with `${env:..}` / `${file:..}` secrets.
//! 2. [`source`]: the Kafka consumer and the per-partition offset tracker (at-least-once).
//! 3. [`decode`]: record bytes → JSON value (one envelope, or an array of them); [`prepare`] runs
//!    it and [`validate`] on one record (the sink adds transforms in between).
//! 4. transforms (the `lark-sink-transforms` crate): user scripts reshape values.
//! 5. [`validate`]: the envelope JSON Schema + per-`msg_type` content checks and size limits.
//! 6. [`lark`]: the Lark Open Platform client (token cache, send, response classification).
//! 7. [`delivery`]: sends one message with retries, deciding deliver / retry / dead-letter.
//! 8. [`dlq`]: the dead-letter topic writer (`__connect.errors.*` headers).
//! 9. [`results`]: the optional result topic (one JSON outcome per message).
//! 10. [`sink`]: wires 2–9 together and stores offsets only after the outcome is durable: start-up
//!     (`sink/startup.rs`), the consumer loop (`intake.rs`), when to pause (`backpressure.rs`,
//!     pure), and what happens after Lark answers (`settle.rs`).
//!
//! [`commands`] holds the subcommands of the binary, one module each: among them
//! [`commands::demo`] runs the whole path on an embedded broker and the Lark emulator, and
//! [`commands::check`] tests a config against the real broker and Lark before going live.
//!
//! [`prepare`] (decode, split, validate) and [`lark::classify`] are pure and build without the
//! default `runtime` feature, for the fuzz targets in `fuzz/`; everything else needs it.

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod commands;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod control;
pub mod decode;
#[cfg(feature = "runtime")]
pub mod delivery;
pub mod dlq;
pub mod lark;
pub mod prepare;
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
pub mod telemetry;
pub mod validate;

#[cfg(feature = "runtime")]
pub use lark_emulator as emulator;
