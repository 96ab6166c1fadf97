//! POSIX shell words, for the text psi hands to a shell (`psi infisical export`) and the
//! names it accepts as environment variables (workload `env:` keys).

/// Whether `name` is a POSIX shell variable name: a letter or `_`, then letters, digits
/// and `_`.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `value` single-quoted for a POSIX shell: every byte literal, `'` as `'\''`.
pub fn quote(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'\'');
    for &byte in value {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_byte() {
        let mut out = Vec::new();
        quote(b"a'b", &mut out);
        assert_eq!(out, b"'a'\\''b'");
    }

    #[test]
    fn var_names() {
        assert!(is_var_name("DB_HOST"));
        assert!(is_var_name("_x1"));
        assert!(!is_var_name("1X"));
        assert!(!is_var_name("A-B"));
        assert!(!is_var_name(""));
    }
}
