//! Record bytes → JSON, and JSON → the list of envelopes it carries.
//!
//! A record value is one envelope object or a JSON array of envelopes (the shape Tapdata users
//! already produce). Decoding is split in two because transforms sit in between: [`decode_value`]
//! runs on the raw bytes, [`split_envelopes`] on whatever the transform chain returned.

use serde_json::Value;

/// Why a record could not be read. The whole record is dead-lettered with this text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record value is empty (null or zero bytes)")]
    Empty,
    #[error("record value is not UTF-8 (invalid byte at position {0})")]
    NotUtf8(usize),
    #[error("record value is not JSON: {0}")]
    NotJson(String),
    #[error("record value is a JSON {0}; expected an envelope object or an array of envelopes")]
    WrongTopLevel(&'static str),
    #[error("record value is an empty array: it holds no envelope")]
    EmptyArray,
}

/// Parses the raw record value.
pub fn decode_value(bytes: Option<&[u8]>) -> Result<Value, DecodeError> {
    let bytes = match bytes {
        None | Some([]) => return Err(DecodeError::Empty),
        Some(b) => b,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))
}

/// One value → its envelopes, each still unvalidated. `is_array` tells the validator to prefix
/// error paths with the element index (`/2/receiveId`), so a reason points at the right element.
pub fn split_envelopes(value: Value) -> Result<(Vec<Value>, bool), DecodeError> {
    match value {
        Value::Object(_) => Ok((vec![value], false)),
        Value::Array(items) if items.is_empty() => Err(DecodeError::EmptyArray),
        Value::Array(items) => Ok((items, true)),
        other => Err(DecodeError::WrongTopLevel(json_type(&other))),
    }
}

pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_objects_and_arrays() {
        let v = decode_value(Some(br#"{"a":1}"#)).unwrap();
        assert_eq!(split_envelopes(v).unwrap(), (vec![json!({"a":1})], false));
        let v = decode_value(Some(br#"[{"a":1},{"b":2}]"#)).unwrap();
        assert_eq!(split_envelopes(v).unwrap().0.len(), 2);
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert_eq!(decode_value(None), Err(DecodeError::Empty));
        assert_eq!(decode_value(Some(b"")), Err(DecodeError::Empty));
        assert_eq!(decode_value(Some(b"  \n")), Err(DecodeError::Empty));
        assert_eq!(
            decode_value(Some(b"{\"a\":\xff}")),
            Err(DecodeError::NotUtf8(5))
        );
        let e = decode_value(Some(b"{\"a\":")).unwrap_err();
        assert!(
            matches!(e, DecodeError::NotJson(ref m) if m.contains("EOF")),
            "{e}"
        );
        assert_eq!(
            split_envelopes(json!("hi")),
            Err(DecodeError::WrongTopLevel("string"))
        );
        assert_eq!(
            split_envelopes(json!(42)),
            Err(DecodeError::WrongTopLevel("number"))
        );
        assert_eq!(split_envelopes(json!([])), Err(DecodeError::EmptyArray));
    }
}
