//! The Kafka side: the consumer ([`consumer`]), which offsets may be committed and storing them
//! ([`offsets`]), the client helpers the writers share ([`kafka`]: producer config, the
//! `acks=all` producer, topic creation), and the one probe of the connection that start-up and
//! `check` both run ([`probe`]).

pub mod consumer;
pub mod kafka;
pub mod offsets;
pub mod probe;

pub use consumer::{create_consumer, SinkConsumer, SinkContext};
pub use offsets::{OffsetTracker, Offsets, Ticket};
