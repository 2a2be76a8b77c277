//! The Lark / Feishu Open Platform client: what lark-sink says to Lark and how it reads the answer.
//!
//! - [`classify`]: every response → a retry class of lark-api.md §3 (by HTTP status *and* body `code`).
//! - [`token`]: the tenant_access_token cache (early refresh, single-flight fetch, eviction).
//! - [`client`]: the calls themselves (send message, webhook push, urgent, batch_get_id).
//! - [`directory`]: phone / email → open_id, cached, single-flight and batched.
//! - [`webhook`]: custom-bot webhook bodies and their signature.

pub mod classify;
pub mod client;
pub mod directory;
pub mod token;
pub mod webhook;

pub use classify::{ErrorClass, LarkError};
pub use client::{LarkClient, SendOk, UserIdEntry};
pub use directory::{LookupConfig, UserDirectory};
