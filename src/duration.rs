//! Durations as operators write them: "500ms", "30s", "5m".

use std::time::Duration;

/// Parses a human duration. A bare number is refused: "30" could mean seconds or
/// milliseconds, and guessing wrong is worse than asking.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"500ms\", \"30s\" or \"5m\"".into());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "'{text}' has no unit; write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration: {e}"))
}

/// The inverse of [`parse`], in the shortest form ("30s", "5m", "1m 30s").
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Parses and checks that the value lies within `min..=max`.
pub fn parse_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = parse(text)?;
    if value < min || value > max {
        return Err(format!(
            "{} is out of range: must be between {} and {}",
            format(value),
            format(min),
            format(max)
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse(" 5m ").unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("").is_err());
        assert!(parse("soon").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "30s", "5m", "1h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn range_is_enforced() {
        let min = Duration::from_millis(10);
        let max = Duration::from_secs(60);
        assert!(
            parse_within("5ms", min, max)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_within("2m", min, max).is_err());
        assert_eq!(parse_within("1m", min, max).unwrap(), max);
    }

    proptest::proptest! {
        /// Config values come from people: any text parses or is refused, never panics,
        /// and whatever parses formats back to text that parses to the same value.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,30}") {
            if let Ok(d) = parse(&text) {
                proptest::prop_assert_eq!(parse(&format(d)).unwrap(), d);
            }
        }

        #[test]
        fn millisecond_durations_round_trip(ms in 1u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
