//! The Kafka side: the consumer ([`consumer`]) and which offsets may be committed ([`offsets`]).

pub mod consumer;
pub mod offsets;

pub use consumer::{create_consumer, SinkConsumer, SinkContext};
pub use offsets::{OffsetTracker, Ticket};
