//! The delivery engine: per-receiver queues ([`scheduler`]), Lark's quotas enforced before
//! sending ([`limits`]), the send-with-retries of one message ([`send`]) and the update or recall
//! of one already sent ([`mod@update`]).
//!
//! The sink submits every validated message to the [`scheduler::Scheduler`]; a queue per receiver
//! keeps that receiver's messages in order while receivers proceed in parallel; each send first
//! waits for permission from [`limits::RateLimits`], so a conforming Lark sees no throttling.

pub mod digest;
pub mod keyed;
pub mod limits;
pub mod scheduler;
pub mod send;
pub mod update;

pub use limits::{RateConfig, RateLimits};
pub use scheduler::{Handler, Queued, Scheduler};
pub use send::{buzz, deliver, Delivered, DeliveryFailure, RetryPolicy};
pub use update::{recall, update};
