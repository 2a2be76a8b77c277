//! The long connection's frames (docs/lark-api.md §15.3): `pbbp2.Frame`, a proto2 message in every
//! binary WebSocket message, and what lark-sink does with them: ping, read a pong's settings, put
//! fragments back together, answer a data frame.
//!
//! Pure: bytes in, bytes out; the WebSocket and the clock are the caller's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;
use serde::Deserialize;

/// `Frame.method` of a control frame (ping, pong).
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of a data frame (an event or a card callback).
pub const METHOD_DATA: i32 = 1;

/// How long the fragments of one message wait for the rest (the Go and Python SDKs: 5 s, reset by
/// each fragment).
pub const FRAGMENT_TTL: Duration = Duration::from_secs(5);

/// The most fragments one message may announce (`sum`): a bound on what a bad frame can make the
/// client keep.
pub const MAX_FRAGMENTS: usize = 1024;

/// One `pbbp2.Header`: a string pair.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// One `pbbp2.Frame` (proto2; fields 1–4 required: the Node SDK's decoder refuses a frame
/// without them, so they are always written, also when 0).
#[derive(Clone, PartialEq, Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// What is wrong with a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a pbbp2 frame: {0}")]
    Decode(String),
    #[error("data frame without its '{0}' header")]
    MissingHeader(&'static str),
    #[error("data frame header '{name}' is not a number: {value:?}")]
    BadNumber { name: &'static str, value: String },
    #[error("fragment {seq} of {sum} is out of range")]
    BadFragment { seq: usize, sum: usize },
}

/// What a frame is, by its `method` and `type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Pong,
    /// An event or a card callback (`type` `event`; `card` frames are treated the same:
    /// lark-api.md §15.3).
    Data,
    /// Anything else: ignored.
    Other,
}

impl Frame {
    /// Reads one binary WebSocket message.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Frame, FrameError> {
        Frame::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))
    }

    /// The frame as a binary WebSocket message.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The client's ping: a control frame with `type: ping` for `service` (the URL's
    /// `service_id`).
    pub fn ping(service: i32) -> Frame {
        Frame {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![header("type", "ping")],
            payload_encoding: None,
            payload_type: None,
            payload: None,
            log_id_new: None,
        }
    }

    /// The value of header `key`, if present.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// What the frame is.
    pub fn kind(&self) -> Kind {
        match (self.method, self.header("type")) {
            (METHOD_CONTROL, Some("ping")) => Kind::Ping,
            (METHOD_CONTROL, Some("pong")) => Kind::Pong,
            (METHOD_DATA, Some("event" | "card")) => Kind::Data,
            _ => Kind::Other,
        }
    }

    /// The answer to this data frame: the frame itself with `biz_rt` (the handler's time, ms)
    /// added and the payload replaced by `{"code":<code>}`, or with `data` (the standard base64
    /// of a callback's JSON answer: a toast) when given (lark-api.md §15.3).
    pub fn ack(&self, code: u16, data: Option<&[u8]>, biz_rt: Duration) -> Frame {
        let mut ack = self.clone();
        ack.headers.retain(|h| h.key != "biz_rt");
        ack.headers
            .push(header("biz_rt", &biz_rt.as_millis().to_string()));
        let body = match data {
            Some(d) => {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD.encode(d);
                serde_json::json!({ "code": code, "data": data })
            }
            None => serde_json::json!({ "code": code }),
        };
        ack.payload = Some(body.to_string().into_bytes());
        ack
    }
}

/// A header pair.
pub fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// The settings a pong may carry (and the endpoint answers with), in seconds; a missing or zero
/// one keeps the current value (a zero ping interval would ping in a tight loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ClientConfig {
    #[serde(rename = "ReconnectCount", default)]
    pub reconnect_count: Option<i64>,
    #[serde(rename = "ReconnectInterval", default)]
    pub reconnect_interval: Option<u64>,
    #[serde(rename = "ReconnectNonce", default)]
    pub reconnect_nonce: Option<u64>,
    #[serde(rename = "PingInterval", default)]
    pub ping_interval: Option<u64>,
}

/// The connection's timing, as the server last set it (the SDKs' defaults until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often to ping.
    pub ping_interval: Duration,
    /// Between reconnect attempts after the first.
    pub reconnect_interval: Duration,
    /// The first reconnect attempt comes after a random delay below this.
    pub reconnect_nonce: Duration,
    /// Attempts before giving up; negative: never give up.
    pub reconnect_count: i64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ping_interval: Duration::from_secs(120),
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            reconnect_count: -1,
        }
    }
}

impl Timing {
    /// Takes what `cfg` sets (non-zero values only).
    pub fn apply(&mut self, cfg: &ClientConfig) {
        let secs = |v: Option<u64>| v.filter(|s| *s > 0).map(Duration::from_secs);
        if let Some(d) = secs(cfg.ping_interval) {
            self.ping_interval = d;
        }
        if let Some(d) = secs(cfg.reconnect_interval) {
            self.reconnect_interval = d;
        }
        if let Some(d) = secs(cfg.reconnect_nonce) {
            self.reconnect_nonce = d;
        }
        if let Some(n) = cfg.reconnect_count {
            self.reconnect_count = n;
        }
    }

    /// Takes a pong's payload, if it is a `ClientConfig`.
    pub fn apply_pong(&mut self, pong: &Frame) {
        if let Some(cfg) = pong
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<ClientConfig>(p).ok())
        {
            self.apply(&cfg);
        }
    }
}

/// A data frame's place in its message: (message_id, sum, seq).
fn fragment_of(frame: &Frame) -> Result<(String, usize, usize), FrameError> {
    let get = |name: &'static str| frame.header(name).ok_or(FrameError::MissingHeader(name));
    let number = |name: &'static str| -> Result<usize, FrameError> {
        let value = get(name)?;
        value.parse().map_err(|_| FrameError::BadNumber {
            name,
            value: value.to_string(),
        })
    };
    let message_id = get("message_id")?.to_string();
    let (sum, seq) = (number("sum")?, number("seq")?);
    if sum == 0 || sum > MAX_FRAGMENTS || seq >= sum {
        return Err(FrameError::BadFragment { seq, sum });
    }
    Ok((message_id, sum, seq))
}

/// Messages whose fragments are still coming in, by `message_id`.
#[derive(Debug, Default)]
pub struct Reassembly {
    parts: HashMap<String, Partial>,
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    touched: Instant,
}

impl Reassembly {
    /// Takes a data frame at `now`: the whole payload when this frame completes its message (an
    /// unsplit frame, `sum` 1, completes at once), else `None` while parts are missing. Parts
    /// may come in any order; a repeated part replaces the earlier copy. Messages idle for
    /// [`FRAGMENT_TTL`] are dropped.
    pub fn take(&mut self, frame: &Frame, now: Instant) -> Result<Option<Vec<u8>>, FrameError> {
        self.parts
            .retain(|_, p| now.duration_since(p.touched) < FRAGMENT_TTL);
        let (message_id, sum, seq) = fragment_of(frame)?;
        let payload = frame.payload.clone().unwrap_or_default();
        if sum == 1 {
            return Ok(Some(payload));
        }
        let partial = self
            .parts
            .entry(message_id.clone())
            .or_insert_with(|| Partial {
                parts: vec![None; sum],
                touched: now,
            });
        if partial.parts.len() != sum {
            // Another `sum` for the same message: start it again.
            partial.parts = vec![None; sum];
        }
        partial.parts[seq] = Some(payload);
        partial.touched = now;
        if partial.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let whole = self
            .parts
            .remove(&message_id)
            .map(|p| p.parts.into_iter().flatten().flatten().collect());
        Ok(whole)
    }

    /// How many messages wait for fragments.
    pub fn pending(&self) -> usize {
        self.parts.len()
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
