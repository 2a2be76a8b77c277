//! The Lark / Feishu Open Platform client: what lark-sink says to Lark and how it reads the answer.
//!
//! - [`classify`]: every response → a retry class of lark-api.md §3 (by HTTP status *and* body `code`).
//! - [`token`]: the tenant_access_token cache (early refresh, single-flight fetch, eviction).
//! - [`client`]: the calls themselves (send message, webhook push, urgent, batch_get_id).
//! - [`directory`]: phone / email → open_id, cached, single-flight and batched.
//! - [`webhook`]: custom-bot webhook bodies and their signature.

pub mod classify;
#[cfg(feature = "runtime")]
pub mod client;
#[cfg(feature = "runtime")]
pub mod directory;
#[cfg(feature = "runtime")]
pub mod token;
#[cfg(feature = "runtime")]
pub mod webhook;

pub use classify::{ErrorClass, LarkError};
#[cfg(feature = "runtime")]
pub use client::{LarkClient, SendOk, UserIdEntry};
#[cfg(feature = "runtime")]
pub use directory::{LookupConfig, UserDirectory};
