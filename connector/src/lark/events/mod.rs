//! Lark's way back: events and card button clicks (docs/lark-api.md §9, §15). The protocol,
//! pure: what the long connection's frames are ([`frame`]), how a signed HTTP callback is verified
//! and decrypted ([`callback`]), and what an event becomes as a Kafka record and when a redelivery
//! is the same event ([`event`]).
//!
//! [`client`] is the long connection itself (IO: HTTP and WebSocket); `inbound` writes what it
//! receives to Kafka, and in `lark.events.mode=http` serves the listener that [`callback`]
//! verifies the requests of.

pub mod callback;
pub mod client;
pub mod event;
pub mod frame;
