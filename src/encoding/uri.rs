//! Percent-encoding with the character set psi's URLs use (through the `percent-encoding`
//! crate).
//!
//! Self-contained: the `psi-client` binary compiles this file as its own `encoding` module,
//! beside the client (`src/client/lean.rs`), so it encodes `SECRET_ID` as `psi client` does.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// RFC 3986's unreserved characters stay, everything else becomes `%XX`: safe both as a
/// path segment and as a query value.
pub const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a URI path segment or query value ([`URI_COMPONENT`]).
pub fn uri_component(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, URI_COMPONENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(
            uri_component("myapp--DB_HOST.v1~").to_string(),
            "myapp--DB_HOST.v1~"
        );
        assert_eq!(
            uri_component(r#"{"a":"x y/$Z&=@"}"#).to_string(),
            "%7B%22a%22%3A%22x%20y%2F%24Z%26%3D%40%22%7D"
        );
        assert_eq!(uri_component("é").to_string(), "%C3%A9");
    }
}
