//! Lark's addresses in their canonical form: an email or a mobile number can be written many ways
//! and Lark treats the spellings as one person (lark-api.md §5). Both the receiver queues
//! ([`crate::envelope::Receiver::queue_key`]) and the look-up cache
//! ([`crate::lark::directory`]) key on these forms, so one person has one queue and one cache
//! entry. Pure: it builds without the `runtime` feature, like [`super::classify`].

/// The canonical form of an email: case does not matter to Lark (§5: the answer may change it).
/// The receiver queues and the look-up cache both key on it.
pub fn canonical_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The canonical form of a mobile number: `+` and the digits, separators (spaces, `-`, `.`,
/// parentheses) dropped. A number without `+` is a mainland number (§5: "non-mainland mobiles
/// need `+<country code>`"), so `+86` is added: both spellings share one queue and one cache entry.
/// `None` when it is not a phone number at all.
pub fn canonical_mobile(mobile: &str) -> Option<String> {
    let trimmed = mobile.trim();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    if digits.is_empty() {
        return None;
    }
    Some(if plus {
        format!("+{digits}")
    } else {
        format!("+86{digits}")
    })
}
