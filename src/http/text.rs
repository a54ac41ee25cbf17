//! Client text that names something (a tool, a key, a filter value) is bounded and
//! printable before it reaches a store, a log or a metric: at most [`MAX_NAME`] bytes and
//! no control characters. A NUL byte in a name once reached PostgreSQL, which refused
//! the audit row holding it.

use crate::error::ApiError;
use crate::registry::ValidationError;

/// Longest name accepted, in bytes. MCP tool names are at most 128 characters.
pub const MAX_NAME: usize = 256;

/// `value` if it is a plausible name; else 400 `invalid-field` naming `field`.
pub fn name<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(ApiError::InvalidField(ValidationError::new(
            field,
            format!("must be 1 to {MAX_NAME} bytes"),
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::InvalidField(ValidationError::new(
            field,
            "must not contain control characters",
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(name("tool", "read_file").is_ok());
        assert!(name("tool", "ünïcode-ok").is_ok());
        for bad in ["", "ech\0o", "a\nb", "\u{7f}", &"x".repeat(MAX_NAME + 1)] {
            assert!(name("tool", bad).is_err(), "{bad:?}");
        }
    }
}
