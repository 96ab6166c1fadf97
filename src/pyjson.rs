//! Python-compatible JSON text, for the byte-exact formats the original psi wrote with
//! `json.dumps`: mapping files (`", "`/`": "` separators, key order kept) and the cache's
//! canonical mapping form (compact, sorted keys). Both escape non-ASCII as `\uXXXX`, as
//! Python's default `ensure_ascii=True` does, and leave `/` alone.

use std::fmt::Write;

use serde_json::{Map, Value};

/// Separators and key order for [`dumps`].
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub item_sep: &'static str,
    pub key_sep: &'static str,
    pub sort_keys: bool,
}

impl Style {
    /// `json.dumps(v)`.
    pub const DEFAULT: Style = Style {
        item_sep: ", ",
        key_sep: ": ",
        sort_keys: false,
    };
    /// `json.dumps(v, separators=(",", ":"), sort_keys=True)`.
    pub const CANONICAL: Style = Style {
        item_sep: ",",
        key_sep: ":",
        sort_keys: true,
    };
}

/// Serializes `value` the way Python's `json.dumps` does with the given style.
pub fn dumps(value: &Value, style: Style) -> String {
    let mut out = String::new();
    write_value(&mut out, value, style);
    out
}

/// [`dumps`] of an object, without wrapping it in a `Value` first.
pub fn dumps_object(map: &Map<String, Value>, style: Style) -> String {
    let mut out = String::new();
    write_object(&mut out, map, style);
    out
}

fn write_value(out: &mut String, value: &Value, style: Style) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(float) => write_float(out, float),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item_sep);
                }
                write_value(out, item, style);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, style),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, style: Style) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    if style.sort_keys {
        // Python sorts str keys by code point; UTF-8 byte order is the same order.
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    out.push('{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(style.item_sep);
        }
        write_string(out, key);
        out.push_str(style.key_sep);
        write_value(out, item, style);
    }
    out.push('}');
}

/// Appends `s` as a JSON string literal, escaped as Python's `ensure_ascii=True` does.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                // Everything else, control characters and non-ASCII alike, as \uXXXX;
                // characters beyond the BMP as a surrogate pair, as Python does.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it (and so `json.dumps`): the shortest digits that read
/// back as the same double, positional while the decimal point falls within 4 places left
/// and 16 right of the first digit (whole numbers keep `.0`), otherwise `d.ddde+XX`, with
/// the exponent's sign and at least two of its digits. serde_json writes `1e16` where
/// Python writes `1e+16`, and the canonical mapping form must match the original's bytes.
fn write_float(out: &mut String, float: f64) {
    // Rust's `{:e}` gives the same shortest digits: "d.ddd" or "d", an "e", the exponent.
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_at(scientific.find('e').unwrap_or(0));
    let exponent: i32 = exponent[1..].parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    // Where the decimal point goes, counted from the left of the first digit.
    let point = exponent + 1;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            let _ = write!(out, "{whole}.{fraction}");
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{exponent_sign}{:02}", exponent.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_vectors_from_the_original() {
        let mapping = json!({"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"});
        assert_eq!(
            dumps(&mapping, Style::CANONICAL),
            r#"{"key":"DB_HOST","path":"/app","project":"myproject","provider":"infisical"}"#
        );
        let non_ascii = json!({"provider": "infisical", "key": "é/ü\n"});
        assert_eq!(
            dumps(&non_ascii, Style::CANONICAL),
            r#"{"key":"\u00e9/\u00fc\n","provider":"infisical"}"#
        );
    }

    #[test]
    fn default_style_and_astral_characters() {
        assert_eq!(
            dumps(
                &json!({"error": "unauthorized", "detail": "invalid or missing token"}),
                Style::DEFAULT
            ),
            r#"{"error": "unauthorized", "detail": "invalid or missing token"}"#
        );
        assert_eq!(
            dumps(&json!(["\u{1f600}\u{1}"]), Style::DEFAULT),
            r#"["\ud83d\ude00\u0001"]"#
        );
    }

    #[test]
    fn numbers_read_back_as_written() {
        // Found by the fuzzer: without serde_json's float_roundtrip, "10.5e300" parsed one
        // bit off, and the text written for it then read back as another number.
        let value: Value = serde_json::from_str(r#"{"n": 10.5e300}"#).unwrap();
        let again: Value = serde_json::from_str(&dumps(&value, Style::DEFAULT)).unwrap();
        assert_eq!(again, value);
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Each pair: the float, and Python 3's `json.dumps` of it.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123.456, "123.456"),
            (1.5e300, "1.5e+300"),
            (-2.5e-7, "-2.5e-07"),
            (1e22, "1e+22"),
            (10.5e300, "1.05e+301"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1234567890123456.7, "1234567890123456.8"),
        ];
        for (float, python) in cases {
            assert_eq!(dumps(&json!(float), Style::DEFAULT), python, "{float:e}");
            // And the text reads back as the same number.
            let back: f64 = serde_json::from_str(python).unwrap();
            assert_eq!(back.to_bits(), float.to_bits(), "{python}");
        }
        assert_eq!(dumps(&json!([7, -3]), Style::DEFAULT), "[7, -3]");
    }
}
