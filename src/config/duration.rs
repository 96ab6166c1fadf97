//! Durations in configuration (`30s`, `5m`, `1h`, `90d`, or plain seconds), as the original
//! accepted them, plus `ms` for the sub-second keys. One parser, so every key that takes a
//! duration reads the same. Every unit here is also one systemd reads, because some keys
//! end up in timer units verbatim.

use std::time::Duration;

/// Parses `text` as a number with an optional unit: `ms`, `s`, `m`, `h`, `d` (seconds when
/// none).
/// The error says what is accepted; it is meant to be prefixed with the key path.
/// A String error: raised in serde's visitor (`values::parse_scalar`), which adds line and column.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let millis: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid(text)),
    };
    let count: u64 = number.parse().map_err(|_| invalid(text))?;
    count
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| invalid(text))
}

fn invalid(text: &str) -> String {
    format!("'{text}' is not a duration; use a number with an optional unit ms, s, m, h or d (for example 30s, 5m, 1h, 90d)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse(" 90d ").unwrap(), Duration::from_secs(90 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "s",
            "ms",
            "5x",
            "5sm",
            "-1s",
            "1.5h",
            "99999999999999999999d",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }
}
