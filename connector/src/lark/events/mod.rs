//! Lark's way back: events and card button clicks (docs/lark-api.md §9, §15). The protocol,
//! pure: what the long connection's frames are ([`frame`]), how a signed HTTP callback is verified
//! and decrypted ([`callback`]), and what an event becomes as a Kafka record and when a redelivery
//! is the same event ([`event`]).
//!
//! [`client`] is the long connection itself (IO: HTTP and WebSocket); `inbound` writes what it
//! receives to Kafka. The HTTP callback mode is not wired yet: [`callback`] verifies and
//! decrypts, but no listener uses it so far (docs/ARCHITECTURE.md "Rooms for what comes next").

pub mod callback;
pub mod client;
pub mod event;
pub mod frame;
