//! The Lark / Feishu Open Platform client: what lark-sink says to Lark and how it reads the answer.
//!
//! - [`classify`]: every response → a retry class of lark-api.md §3 (by HTTP status *and* body `code`).
//! - [`token`]: the tenant_access_token cache (early refresh, single-flight fetch, eviction).
//! - [`client`]: the calls themselves (send message, look up users by phone).
//! - [`contacts`]: a TTL cache in front of the phone → open_id look-up.
//! - [`webhook`]: custom-bot webhook bodies and their signature.

pub mod classify;
#[cfg(feature = "runtime")]
pub mod client;
#[cfg(feature = "runtime")]
pub mod contacts;
#[cfg(feature = "runtime")]
pub mod token;
#[cfg(feature = "runtime")]
pub mod webhook;

pub use classify::{ErrorClass, LarkError};
#[cfg(feature = "runtime")]
pub use client::{LarkClient, SendOk};
