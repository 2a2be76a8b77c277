//! The Kafka side: the consumer ([`consumer`]), which topics it consumes ([`subscription`]),
//! which offsets may be committed and storing them ([`offsets`]), the client helpers the writers
//! share ([`kafka`]: producer config, the `acks=all` producer, topic creation and configs, the
//! assign-only reader's config), and the one probe of the connection that start-up and `check`
//! both run ([`probe`]).

pub mod consumer;
pub mod kafka;
pub mod offsets;
pub mod probe;
pub mod subscription;

pub use consumer::{create_consumer, Assignment, ConsumerConfig, SinkConsumer, SinkContext};
pub use offsets::{OffsetTracker, Offsets, Ticket};
pub use subscription::{regex_subscription, topics_include, topics_regex_matcher, Topics};
