//! The Kafka side: the consumer ([`consumer`]), which topics it consumes ([`subscription`]),
//! which offsets may be committed and storing them ([`offsets`]), and the start-up check of the
//! connection's credentials and TLS ([`probe`]).

pub mod consumer;
pub mod offsets;
pub mod probe;
pub mod subscription;

pub use consumer::{create_consumer, Assignment, ConsumerConfig, SinkConsumer, SinkContext};
pub use offsets::{OffsetTracker, Offsets, Ticket};
pub use subscription::{regex_subscription, topics_include, topics_regex_matcher, Topics};
