//! Byte-to-text encodings used in more than one place: lowercase hex, and percent-encoding
//! with the character set psi's URLs use (`uri`, which the `psi-client` binary compiles too).

use std::fmt::Write;

mod uri;
pub use uri::uri_component;

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(hex(&[0x00, 0x7f, 0xff]), "007fff");
    }
}
