//! Fuzz target `lark_answer`: any bytes as a Lark HTTP answer, through
//! `lark_sink::lark::classify::read_answer` (the classifier every Lark call goes through).
//!
//! Input format (so seeds are readable and writable by hand): a first line
//! `<status> [<x-ogw-ratelimit-reset>] [<x-tt-logid>]`, then the body. A status that does not
//! parse is taken from the first two bytes. Checks: success only for a 2xx with code 0; the error
//! carries the status; a 2xx that is not a Lark failure is fatal; a server-given wait never
//! exceeds `MAX_RATELIMIT_RESET` (a larger one would hold the app back for as long as it says).
#![no_main]

use lark_sink::lark::classify::{read_answer, Answer, ErrorClass, MAX_RATELIMIT_RESET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let mut words = head.split(' ');
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| u16::from_le_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]));
    let reset = words.next();
    let log_id = words.next();
    let answer = Answer {
        status,
        body,
        log_id,
        ratelimit_reset: reset,
    };
    match read_answer(answer) {
        Ok(_) => {
            assert!((200..300).contains(&status));
            let v: serde_json::Value = serde_json::from_str(body).expect("a success is JSON");
            assert_eq!(v.get("code").and_then(|c| c.as_i64()), Some(0));
        }
        Err(e) => {
            assert_eq!(e.http_status, Some(status));
            if (200..300).contains(&status) && e.code.is_none() {
                assert_eq!(e.class, ErrorClass::Fatal);
            }
            if let Some(wait) = e.retry_after {
                assert!(wait <= MAX_RATELIMIT_RESET, "{wait:?}");
            }
            // The message and the description are what the DLQ headers carry.
            let _ = e.to_string();
        }
    }
});
