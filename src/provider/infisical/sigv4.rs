//! AWS Signature Version 4, only as much as Infisical's aws-iam login needs: header signing
//! of a request with no query string. Pure: the time and the credentials are arguments.
//!
//! Implemented here rather than pulled in from the AWS SDK because one signed
//! `GetCallerIdentity` is all psi ever sends, and openssl (already linked) has HMAC-SHA256.

use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::crypto::hmac_sha256;
use crate::encoding::hex;
use crate::timefmt::Utc;

/// What one signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    /// The canonical URI, already encoded (`/` for STS).
    pub path: &'a str,
    /// Headers to sign, including `host` and `x-amz-date`; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Who signs, where, and when.
pub struct Scope<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, as in the `X-Amz-Date` header.
    pub amz_date: &'a str,
}

/// The `Authorization` header value for `request`.
pub fn authorization(request: &Request<'_>, scope: &Scope<'_>) -> String {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), normalize_value(value)))
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n\n", request.method, request.path);
    for (name, value) in &headers {
        canonical.push_str(&format!("{name}:{value}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{}", hex(&sha256(request.body))));

    let date = &scope.amz_date[..8];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{}",
        scope.amz_date,
        hex(&sha256(canonical.as_bytes()))
    );
    let mut key = Zeroizing::new(format!("AWS4{}", scope.secret_access_key).into_bytes());
    for part in [date, scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed}, Signature={signature}",
        scope.access_key_id
    )
}

/// `X-Amz-Date` for `time`: UTC, `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(time: SystemTime) -> String {
    let t = Utc::of(time);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// SigV4 trims values and folds inner runs of spaces into one.
fn normalize_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(bytes)
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(hmac_sha256(key, data).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    // AWS's published SigV4 test suite (aws-sig-v4-test-suite): credentials, scope and time
    // shared by every vector.
    fn scope() -> Scope<'static> {
        Scope {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
            amz_date: "20150830T123600Z",
        }
    }

    #[test]
    fn get_vanilla() {
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let request = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            authorization(&request, &scope()),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let request = Request {
            method: "POST",
            path: "/",
            headers: &headers,
            body: b"Param1=value1",
        };
        assert_eq!(
            hex(&sha256(request.body)),
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            authorization(&request, &scope()),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn amz_dates() {
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
            "20150830T123600Z"
        );
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29 (a leap day) 23:59:59.
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "20240229T235959Z"
        );
    }
}
