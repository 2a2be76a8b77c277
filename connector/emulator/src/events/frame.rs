//! The long connection's wire format: `pbbp2.Frame` (lifecycle §4.3), one per binary WebSocket
//! message.
//!
//! Why a separate implementation from the connector's: the emulator is the *server* a client is
//! judged against, so it must not share the client's code (a bug in one would hide in both), and
//! the connector depends on the emulator, not the other way round. Fields 1–4 are `required`
//! (proto2) and always written, also when 0: the Node SDK's decoder refuses frames without them.

use prost::Message;

/// `Frame.method` of a control frame (ping, pong), lifecycle §4.4.
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of a data frame (an event or a card callback), lifecycle §4.4.
pub const METHOD_DATA: i32 = 1;

/// One `pbbp2.Header`: a string pair (every header value is a string, even numbers).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Header {
    /// Header name, e.g. `type`, `message_id`, `sum`, `seq`, `trace_id`, `biz_rt`.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Header value.
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// One `pbbp2.Frame` (proto2), field for field as lifecycle §4.3.
#[derive(Clone, PartialEq, Message)]
pub struct Frame {
    /// `SeqID` (1): unique per pushed data frame; 0 in pings.
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    /// `LogID` (2): unique per pushed data frame; 0 in pings.
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    /// `service` (3): the URL's `service_id`, echoed in every frame.
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    /// `method` (4): [`METHOD_CONTROL`] or [`METHOD_DATA`].
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    /// `headers` (5), repeated, not packed.
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    /// `payload_encoding` (6); the SDKs never read it.
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    /// `payload_type` (7); the SDKs never read it.
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    /// `payload` (8): event JSON (a fragment of it), ack JSON or pong ClientConfig JSON.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    /// `LogIDNew` (9); the SDKs never read it.
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// A binary message that is not a `pbbp2.Frame`.
#[derive(Debug, thiserror::Error)]
#[error("not a pbbp2 frame: {0}")]
pub struct FrameError(#[from] prost::DecodeError);

impl Frame {
    /// Decode one binary WebSocket message.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Frame, FrameError> {
        Ok(Frame::decode(bytes)?)
    }

    /// Encode for sending as one binary WebSocket message.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The value of header `key` (the first one, when repeated).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// The `type` header: `ping`, `pong`, `event` or `card`.
    pub fn kind(&self) -> Option<&str> {
        self.header("type")
    }

    /// A control frame `type=<kind>` with an optional payload (`SeqID` and `LogID` 0, as the
    /// SDKs' pings).
    pub fn control(service: i32, kind: &str, payload: Option<Vec<u8>>) -> Frame {
        Frame {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![header("type", kind)],
            payload_encoding: None,
            payload_type: None,
            payload,
            log_id_new: None,
        }
    }
}

/// A header pair.
pub fn header(key: &str, value: impl Into<String>) -> Header {
    Header {
        key: key.to_string(),
        value: value.into(),
    }
}

/// Split `payload` into parts of at most `size` bytes (at least one part, also for an empty
/// payload; `size` 0 = no split), lifecycle §4.5.
pub fn split(payload: &[u8], size: Option<usize>) -> Vec<Vec<u8>> {
    match size {
        Some(size) if size > 0 && payload.len() > size => {
            payload.chunks(size).map(<[u8]>::to_vec).collect()
        }
        _ => vec![payload.to_vec()],
    }
}

/// The order fragments are sent in: the last part first, then the rest ascending, so a client
/// that concatenates in arrival order instead of by `seq` is caught (lifecycle §6 item 12).
pub fn send_order(sum: usize) -> Vec<usize> {
    match sum {
        0 | 1 => (0..sum).collect(),
        n => std::iter::once(n - 1).chain(0..n - 1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    const PING: &str = "0800100018d20920002a0c0a0474797065120470696e67";
    const ACK: &str = "0807100b18d20920012a0d0a047479706512056576656e742a100a0a6d6573736167655f696412026d312a080a0373756d1201312a080a037365711201302a0e0a0874726163655f6964120274312a0b0a0662697a5f7274120135420c7b22636f6465223a3230307d";

    #[test]
    fn ping_vector() {
        let ping = Frame::control(1234, "ping", None);
        assert_eq!(hex(&ping.to_bytes()), PING);
        let back = Frame::decode_bytes(&unhex(PING)).expect("decode");
        assert_eq!(back, ping);
        assert_eq!(back.kind(), Some("ping"));
    }

    #[test]
    fn ack_vector() {
        let headers = [
            ("type", "event"),
            ("message_id", "m1"),
            ("sum", "1"),
            ("seq", "0"),
            ("trace_id", "t1"),
            ("biz_rt", "5"),
        ];
        let ack = Frame {
            seq_id: 7,
            log_id: 11,
            service: 1234,
            method: METHOD_DATA,
            headers: headers.iter().map(|(k, v)| header(k, *v)).collect(),
            payload_encoding: None,
            payload_type: None,
            payload: Some(br#"{"code":200}"#.to_vec()),
            log_id_new: None,
        };
        assert_eq!(hex(&ack.to_bytes()), ACK);
        let back = Frame::decode_bytes(&unhex(ACK)).expect("decode");
        assert_eq!(back, ack);
        assert_eq!(back.header("biz_rt"), Some("5"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Frame::decode_bytes(&[0xff, 0xff, 0xff]).is_err());
        // Missing required fields decode to zero in prost: accepted, as the Go SDK does.
        assert!(Frame::decode_bytes(&[]).is_ok());
    }

    #[test]
    fn split_and_order() {
        assert_eq!(
            split(b"abcdefg", Some(3)),
            vec![b"abc".to_vec(), b"def".to_vec(), b"g".to_vec()]
        );
        assert_eq!(split(b"abc", None).len(), 1);
        assert_eq!(split(b"", Some(2)).len(), 1);
        assert_eq!(send_order(3), vec![2, 0, 1]);
        assert_eq!(send_order(1), vec![0]);
    }
}
