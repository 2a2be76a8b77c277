//! Lark's way back: events and card button clicks (docs/lark-api.md §9, §15). The protocol only,
//! pure: what the long connection's frames are ([`frame`]), how a signed HTTP callback is verified
//! and decrypted ([`callback`]), and what an event becomes as a Kafka record and when a redelivery
//! is the same event ([`event`]).
//!
//! Not yet wired: no listener, WebSocket client or Kafka writer uses these modules so far (issue
//! "Two-way", docs/ARCHITECTURE.md "Rooms for what comes next"); they are built and tested against
//! the documented test vectors first.

pub mod callback;
pub mod client;
pub mod event;
pub mod frame;
