//! Certificate inspection for the certificates [`super::pki`] issues: what a PEM
//! certificate file holds (notBefore, notAfter, serial), whether it is due for renewal,
//! whether an issued certificate matches its private key, and PEM text as psi writes it.
//!
//! Everything but [`read_cert`] (which reads the file) is pure: the time is passed in.
//! Private keys are only compared, never logged or quoted in an error.

use std::path::Path;
use std::time::Duration;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::error::{Error, Result, ResultExt};

/// What psi reads from a certificate: its validity (seconds since the epoch) and serial.
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// Lower-case hex.
    pub serial: String,
}

/// Where a certificate stands at a given time, against its `renew_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// More than `renew_before` left.
    Valid,
    /// Still valid, but within `renew_before` of its notAfter.
    NeedsRenewal,
    /// Past its notAfter.
    Expired,
}

impl Standing {
    /// The name `psi infisical tls status` prints (and its JSON carries).
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Valid => "valid",
            Standing::NeedsRenewal => "needs_renewal",
            Standing::Expired => "expired",
        }
    }
}

impl CertInfo {
    /// Seconds left until notAfter at `now` (seconds since the epoch); negative once expired.
    pub fn left(&self, now: f64) -> f64 {
        self.not_after as f64 - now
    }

    /// Whole days left at `now`, rounded down.
    pub fn days_left(&self, now: f64) -> i64 {
        (self.left(now) / 86_400.0).floor() as i64
    }

    /// Where the certificate stands at `now`: renewal is due unless more than
    /// `renew_before` is left.
    pub fn standing(&self, now: f64, renew_before: Duration) -> Standing {
        let left = self.left(now);
        if left <= 0.0 {
            Standing::Expired
        } else if left <= renew_before.as_secs_f64() {
            Standing::NeedsRenewal
        } else {
            Standing::Valid
        }
    }
}

/// notBefore and notAfter (seconds since the epoch) and serial of a PEM certificate file.
pub fn read_cert(path: &Path) -> Result<CertInfo> {
    let pem = crate::fsutil::read_capped(path, crate::fsutil::PEM)
        .map_err(|err| Error::io("cannot read", path, err))?;
    let x509 = X509::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    let serial = x509
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_lowercase()))
        .with_context(|| format!("{}: bad serial", path.display()))?;
    Ok(CertInfo {
        not_before: epoch_of(x509.not_before())?,
        not_after: epoch_of(x509.not_after())?,
        serial,
    })
}

fn epoch_of(time: &Asn1TimeRef) -> Result<i64> {
    let zero = Asn1Time::from_unix(0)?;
    let diff = zero.diff(time)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// Checks that `certificate` (PEM, as Infisical sent it) belongs to `key_pem`, the private
/// key that will sit next to it.
pub fn check_key_match(certificate: &str, key_pem: &[u8]) -> Result<()> {
    let x509 = X509::from_pem(certificate.as_bytes())
        .context("Infisical sent an unparseable certificate")?;
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem)
        .map_err(|_| Error::Refused("the private key is not a PEM private key".into()))?;
    let public = x509.public_key().context("certificate public key")?;
    if !public.public_eq(&key) {
        return Err(Error::Refused(
            "the issued certificate does not match the private key; nothing written".into(),
        ));
    }
    Ok(())
}

/// PEM text as written to a file: with exactly one final newline, which Infisical leaves
/// out (`cat cert.pem chain.pem` would then run two certificates together, and OpenSSL reads
/// none). Empty text, a root CA's empty chain, stays empty. Zeroized: it may be the key.
pub fn pem_file(text: &str) -> Zeroizing<String> {
    let text = text.trim_end();
    let mut pem = Zeroizing::new(String::with_capacity(text.len() + 1));
    if !text.is_empty() {
        pem.push_str(text);
        pem.push('\n');
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_end_with_one_newline() {
        let end = "-----END CERTIFICATE-----";
        for sent in [end.to_owned(), format!("{end}\n"), format!("{end}\r\n\n")] {
            assert_eq!(*pem_file(&sent), format!("{end}\n"), "{sent:?}");
        }
        assert_eq!(*pem_file(""), "");
        assert_eq!(*pem_file("\n"), "");
    }

    #[test]
    fn standing_against_renew_before() {
        let info = CertInfo {
            not_before: 0,
            not_after: 10 * 86_400,
            serial: "01".into(),
        };
        let renew_before = Duration::from_secs(3 * 86_400);
        let at = |day: f64| info.standing(day * 86_400.0, renew_before);
        assert_eq!(at(1.0), Standing::Valid);
        assert_eq!(at(7.0), Standing::NeedsRenewal);
        assert_eq!(at(9.5), Standing::NeedsRenewal);
        assert_eq!(at(10.0), Standing::Expired);
        assert_eq!(info.days_left(1.5 * 86_400.0), 8);
        assert_eq!(info.days_left(10.5 * 86_400.0), -1);
    }
}
