//! The Lark / Feishu Open Platform client: what lark-sink says to Lark and how it reads the answer.
//!
//! - [`address`]: the canonical form of an email or a mobile number (one person, one key).
//! - [`classify`]: every response → a retry class of lark-api.md §3 (by HTTP status *and* body `code`).
//! - [`token`]: the tenant_access_token cache (early refresh, single-flight fetch, eviction).
//! - [`http`]: the HTTP client builder and the transport every call goes through (sends a request,
//!   reads the answer and what reqwest reports when there is none).
//! - [`client`]: the calls themselves (send message, webhook push, urgent, batch_get_id, and
//!   the lifecycle calls: update a card, edit, recall).
//! - [`directory`]: phone / email → open_id, cached, single-flight and batched.
//! - [`webhook`]: custom-bot webhook settings, bodies and their signature.
//! - [`events`]: the way back, as a protocol: long-connection frames, signed callbacks, events as
//!   records, and the long connection's client (`inbound` writes what it receives to Kafka).
//!
//! `lark` knows nothing about Kafka or the connector's config: `config` builds its
//! [`ClientConfig`], [`WebhookConfig`] and [`LookupConfig`] (docs/ARCHITECTURE.md, "Dependency
//! rules").

pub mod address;
pub mod classify;
#[cfg(feature = "runtime")]
pub mod client;
#[cfg(feature = "runtime")]
pub mod directory;
#[cfg(feature = "runtime")]
pub mod events;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod token;
#[cfg(feature = "runtime")]
pub mod webhook;

pub use classify::{Call, ErrorClass, LarkError, Throttle};

/// The member a keyed card's callback values carry its `messageKey` in (the sink adds it to each
/// button's `value`, `envelope::validate`), so that a click on the card names the key it was sent
/// for (`lark::events::event` reads it back into the `lark.message_key` header): the round trip
/// Lark → Kafka → Lark needs no lookup, whichever instance gets the click.
pub const MESSAGE_KEY_IN_VALUE: &str = "lark_sink_message_key";
#[cfg(feature = "runtime")]
pub use client::{ClientConfig, LarkClient, Recalled, SendOk, Updated, UserIdEntry};
#[cfg(feature = "runtime")]
pub use directory::{LookupConfig, UserDirectory};
#[cfg(feature = "runtime")]
pub use webhook::WebhookConfig;
