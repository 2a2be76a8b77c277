//! The Kafka side: the consumer ([`consumer`]), which offsets may be committed and storing them
//! ([`offsets`]), and the start-up check of the connection's credentials and TLS ([`probe`]).

pub mod consumer;
pub mod offsets;
pub mod probe;

pub use consumer::{create_consumer, SinkConsumer, SinkContext};
pub use offsets::{OffsetTracker, Offsets, Ticket};
