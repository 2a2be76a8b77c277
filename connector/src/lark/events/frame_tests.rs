//! Unit tests of `frame.rs`, with the test vectors of lark-api.md §15.3.

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn data(message_id: &str, sum: usize, seq: usize, payload: &str) -> Frame {
    Frame {
        seq_id: 7,
        log_id: 11,
        service: 1234,
        method: METHOD_DATA,
        headers: vec![
            header("type", "event"),
            header("message_id", message_id),
            header("sum", &sum.to_string()),
            header("seq", &seq.to_string()),
            header("trace_id", "t1"),
        ],
        payload_encoding: None,
        payload_type: None,
        payload: Some(payload.as_bytes().to_vec()),
        log_id_new: None,
    }
}

#[test]
fn the_ping_is_the_documented_bytes() {
    let ping = Frame::ping(1234);
    assert_eq!(
        hex(&ping.to_bytes()),
        "0800100018d20920002a0c0a0474797065120470696e67"
    );
    let back = Frame::decode_bytes(&ping.to_bytes()).unwrap();
    assert_eq!(back, ping);
    assert_eq!(back.kind(), Kind::Ping);
}

#[test]
fn the_ack_is_the_documented_bytes() {
    let ack = data("m1", 1, 0, "{\"schema\":\"2.0\"}").ack(200, None, Duration::from_millis(5));
    assert_eq!(
        hex(&ack.to_bytes()),
        "0807100b18d20920012a0d0a047479706512056576656e742a100a0a6d6573736167655f696412026d312a080a0373756d1201312a080a037365711201302a0e0a0874726163655f6964120274312a0b0a0662697a5f7274120135420c7b22636f6465223a3230307d"
    );
    // A callback's answer travels as base64 `data`.
    let toast = br#"{"toast":{"type":"info","content":"ok"}}"#;
    let ack = data("m1", 1, 0, "{}").ack(200, Some(toast), Duration::ZERO);
    let body: serde_json::Value = serde_json::from_slice(ack.payload.as_deref().unwrap()).unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (body["code"].as_u64(), decoded.as_slice()),
        (Some(200), &toast[..])
    );
}

#[test]
fn frames_decode_whatever_the_field_order_and_bad_bytes_are_errors() {
    // Missing fields read as 0 (lark-sink is lenient in what it reads; it always writes all four).
    let bare = Frame::decode_bytes(&unhex("2001")).unwrap();
    assert_eq!((bare.seq_id, bare.service, bare.method), (0, 0, 1));
    // Fields in reverse order (method before SeqID): the same frame.
    let mut reordered = unhex("2001");
    reordered.extend(unhex("18d209"));
    reordered.extend(unhex("100b"));
    reordered.extend(unhex("0807"));
    let f = Frame::decode_bytes(&reordered).unwrap();
    assert_eq!((f.seq_id, f.log_id, f.service, f.method), (7, 11, 1234, 1));
    assert!(Frame::decode_bytes(b"\xff\xff\xff").is_err());
}

#[test]
fn kinds_by_method_and_type() {
    let mut f = Frame::ping(1);
    f.headers = vec![header("type", "pong")];
    assert_eq!(f.kind(), Kind::Pong);
    assert_eq!(data("m", 1, 0, "").kind(), Kind::Data);
    let mut card = data("m", 1, 0, "");
    card.headers[0] = header("type", "card");
    assert_eq!(
        card.kind(),
        Kind::Data,
        "card frames are handled like events"
    );
    let mut odd = data("m", 1, 0, "");
    odd.method = METHOD_CONTROL;
    assert_eq!(odd.kind(), Kind::Other);
}

#[test]
fn a_pong_sets_the_timing_and_zeros_are_ignored() {
    let mut t = Timing::default();
    let mut pong = Frame::ping(1);
    pong.headers = vec![header("type", "pong")];
    pong.payload = Some(
        br#"{"PingInterval":5,"ReconnectCount":3,"ReconnectInterval":0,"ReconnectNonce":2}"#
            .to_vec(),
    );
    t.apply_pong(&pong);
    assert_eq!(t.ping_interval, Duration::from_secs(5));
    assert_eq!(t.reconnect_count, 3);
    assert_eq!(t.reconnect_interval, Duration::from_secs(120), "0 ignored");
    assert_eq!(t.reconnect_nonce, Duration::from_secs(2));
    pong.payload = Some(b"not json".to_vec());
    t.apply_pong(&pong);
    assert_eq!(t.ping_interval, Duration::from_secs(5), "unchanged");
}

#[test]
fn fragments_are_put_back_in_order_and_stale_ones_dropped() {
    let now = Instant::now();
    let mut r = Reassembly::default();
    assert_eq!(
        r.take(&data("a", 1, 0, "whole"), now).unwrap().as_deref(),
        Some(&b"whole"[..])
    );
    assert_eq!(r.take(&data("b", 3, 2, "C"), now).unwrap(), None);
    assert_eq!(r.take(&data("b", 3, 0, "A"), now).unwrap(), None);
    assert_eq!(r.pending(), 1);
    assert_eq!(
        r.take(&data("b", 3, 1, "B"), now).unwrap().as_deref(),
        Some(&b"ABC"[..])
    );
    assert_eq!(r.pending(), 0);
    // A message whose rest never comes is forgotten after the TTL.
    assert_eq!(r.take(&data("c", 2, 0, "x"), now).unwrap(), None);
    let later = now + FRAGMENT_TTL + Duration::from_millis(1);
    assert_eq!(
        r.take(&data("c", 2, 1, "y"), later).unwrap(),
        None,
        "its first part expired"
    );
    assert_eq!(r.pending(), 1);
}

#[test]
fn a_data_frame_without_its_headers_is_an_error() {
    let mut r = Reassembly::default();
    let now = Instant::now();
    let mut f = data("m", 1, 0, "");
    f.headers.retain(|h| h.key != "sum");
    assert_eq!(r.take(&f, now), Err(FrameError::MissingHeader("sum")));
    let mut f = data("m", 1, 0, "");
    f.headers[3] = header("seq", "one");
    assert!(matches!(
        r.take(&f, now),
        Err(FrameError::BadNumber { name: "seq", .. })
    ));
    assert_eq!(
        r.take(&data("m", 2, 2, ""), now),
        Err(FrameError::BadFragment { seq: 2, sum: 2 })
    );
    assert!(r.take(&data("m", MAX_FRAGMENTS + 1, 0, ""), now).is_err());
}
