//! PKI routes of the fake: real certificates minted with openssl.
//!
//! - [`Generation::Legacy2024`](super::Generation): `POST /api/v1/pki/ca/:caId/issue-certificate`
//!   (alt names as one comma string, hostnames and emails only; fixtures 75-77). There is no
//!   cert-manager API there (fixture 80).
//! - [`Generation::Current`](super::Generation): `POST /api/v1/cert-manager/certificates` with a
//!   profile, `GET .../certificate-requests/:id`, `GET .../:id/bundle`, `POST .../:id/renew`.
//!   [`super::FakeInfisical::set_pki_pending`] makes new requests answer `pending` for a number
//!   of polls first.
//!
//! CAs and profiles are set up by the test ([`super::FakeInfisical::add_ca`],
//! [`super::FakeInfisical::add_cert_profile`]). Certificates are valid from the fake's virtual
//! now minus a minute until now + ttl, or as if issued earlier
//! ([`super::FakeInfisical::backdate_certificates`]: an already expired certificate without
//! waiting for one to expire).

use std::collections::HashMap;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use serde_json::{json, Value};

use super::routes::{str_field, Fail};
use super::state::{iso, State};

pub(super) struct Ca {
    key: PKey<Private>,
    cert: X509,
    serial: String,
}

/// A certificate issued from a CA on the 2024 server, by serial number.
pub(super) struct Leaf {
    id: String,
    ca_id: String,
    common_name: String,
    alt_names: String,
    not_before: u64,
    not_after: u64,
    created_at: u64,
    revoked_at: Option<u64>,
}

/// A certificate issued through the cert-manager API (renewable).
#[derive(Clone)]
pub(super) struct Issued {
    profile_id: String,
    common_name: String,
    alt_names: Vec<(String, String)>,
    ttl: u64,
}

#[derive(Default)]
pub(super) struct Pki {
    pub cas: HashMap<String, Ca>,
    /// profile id -> CA id.
    pub profiles: HashMap<String, String>,
    pub certs: HashMap<String, Issued>,
    /// 2024 server: serial -> certificate.
    pub leaves: HashMap<String, Leaf>,
    /// request id -> (certificate id, polls still answering pending).
    pub requests: HashMap<String, (String, u32)>,
    pub pending: u32,
    /// Seconds before the virtual now that new certificates are issued at.
    pub backdate: u64,
    pub issued: usize,
    pub renewed: usize,
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn serial() -> (Asn1Integer, String) {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x10;
    let bn = BigNum::from_slice(&bytes).unwrap();
    let hex = bn.to_hex_str().unwrap().to_lowercase();
    (bn.to_asn1_integer().unwrap(), hex)
}

fn uuid() -> String {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).unwrap();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn make_ca(now: u64, cn: &str) -> Ca {
    make_ca_named(now, &[("CN", cn)])
}

fn make_ca_named(now: u64, entries: &[(&str, &str)]) -> Ca {
    let key = new_key();
    let mut name = X509NameBuilder::new().unwrap();
    for (field, value) in entries {
        name.append_entry_by_text(field, value).unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let (serial_number, serial_hex) = serial();
    b.set_serial_number(&serial_number).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now as i64 - 3600).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now as i64 + 10 * 365 * 86_400).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Ca {
        key,
        cert: b.build(),
        serial: serial_hex,
    }
}

/// `POST /api/v1/pki/ca` (2024 server; fixture 73): an internal root CA, active at once.
pub(super) fn create_ca(state: &mut State, body: &Value) -> Result<Value, Fail> {
    let slug = str_field(body, "projectSlug").unwrap_or_default();
    let project_id = state
        .projects
        .iter()
        .find(|p| p.slug == slug)
        .map(|p| p.id.clone())
        .ok_or_else(|| Fail::BadRequest {
            error: "BadRequest",
            message: format!("Project with slug '{slug}' not found"),
        })?;
    let field = |name: &str| str_field(body, name).unwrap_or_default().to_owned();
    let order = [
        ("C", "country"),
        ("O", "organization"),
        ("OU", "ou"),
        ("ST", "province"),
        ("CN", "commonName"),
        ("L", "locality"),
    ];
    let values: Vec<(&str, String)> = order
        .iter()
        .map(|(short, key)| (*short, field(key)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let dn = values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let entries: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let now = state.now;
    let ca = make_ca_named(now, &entries);
    let id = uuid();
    let out = json!({"ca": {
        "id": id,
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "parentCaId": null,
        "projectId": project_id,
        "type": field("type"),
        "status": "active",
        "friendlyName": dn,
        "organization": field("organization"),
        "ou": field("ou"),
        "country": field("country"),
        "province": field("province"),
        "locality": field("locality"),
        "commonName": field("commonName"),
        "dn": dn,
        "serialNumber": ca.serial,
        "maxPathLength": -1,
        "keyAlgorithm": str_field(body, "keyAlgorithm").unwrap_or("RSA_2048"),
        "notBefore": iso(now),
        "notAfter": iso(now + 10 * 365 * 86_400),
    }});
    state.pki.cas.insert(id, ca);
    Ok(out)
}

fn ca_not_found() -> Fail {
    Fail::BadRequest {
        error: "BadRequest",
        message: "CA not found".into(),
    }
}

/// `GET /api/v1/pki/ca/:caId/certificate` (fixture 74).
pub(super) fn ca_certificate(state: &mut State, ca_id: &str) -> Result<Value, Fail> {
    let ca = state.pki.cas.get(ca_id).ok_or_else(ca_not_found)?;
    Ok(json!({
        "certificate": server_pem(&ca.cert),
        "certificateChain": "",
        "serialNumber": ca.serial,
    }))
}

fn leaf_not_found() -> Fail {
    Fail::NotFound {
        legacy_error: "NotFound",
        message: "Certificate not found".into(),
    }
}

/// `GET /api/v1/pki/certificates/:serial` (fixture 78).
pub(super) fn leaf(state: &mut State, serial: &str) -> Result<Value, Fail> {
    let leaf = state.pki.leaves.get(serial).ok_or_else(leaf_not_found)?;
    Ok(json!({"certificate": {
        "id": leaf.id,
        "createdAt": iso(leaf.created_at),
        "updatedAt": iso(leaf.revoked_at.unwrap_or(leaf.created_at)),
        "caId": leaf.ca_id,
        "status": if leaf.revoked_at.is_some() { "revoked" } else { "active" },
        "serialNumber": serial,
        "friendlyName": leaf.common_name,
        "commonName": leaf.common_name,
        "notBefore": iso(leaf.not_before),
        "notAfter": iso(leaf.not_after),
        "revokedAt": leaf.revoked_at.map(iso),
        "revocationReason": null,
        "altNames": leaf.alt_names,
    }}))
}

/// `POST /api/v1/pki/certificates/:serial/revoke` (fixture 83).
pub(super) fn revoke(state: &mut State, serial: &str) -> Result<Value, Fail> {
    let now = state.now;
    let leaf = state
        .pki
        .leaves
        .get_mut(serial)
        .ok_or_else(leaf_not_found)?;
    leaf.revoked_at = Some(now);
    Ok(json!({
        "message": "Successfully revoked certificate",
        "serialNumber": serial,
        "revokedAt": iso(now),
    }))
}

/// `90d`, `1h`, `30m`, `10s`, `2w`, `1y` (ms-style) in seconds.
fn ttl_secs(ttl: &str) -> Option<u64> {
    let split = ttl.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = ttl.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    Some(n * mult)
}

/// A certificate's PEM as Infisical sends it: without the final newline (fixtures 74, 75),
/// so `cat cert.pem chain.pem` of the raw texts runs two certificates together.
fn server_pem(cert: &X509) -> String {
    String::from_utf8(cert.to_pem().unwrap())
        .unwrap()
        .trim_end()
        .to_owned()
}

/// `{certificate, issuingCaCertificate, certificateChain, privateKey, serialNumber}`. The key
/// keeps the final newline openssl writes (the fixtures redact the real one), so clients meet
/// both endings.
fn mint(ca: &Ca, now: u64, cn: &str, alt_names: &[(String, String)], ttl: u64) -> Value {
    let key = new_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let (serial, serial_hex) = serial();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now as i64 - 60).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix((now + ttl) as i64).unwrap())
        .unwrap();
    if !alt_names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for (kind, value) in alt_names {
            match kind.as_str() {
                "ip_address" => san.ip(value),
                "email" => san.email(value),
                "uri" => san.uri(value),
                _ => san.dns(value),
            };
        }
        let ext = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
        b.append_extension(ext).unwrap();
    }
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    let ca_pem = server_pem(&ca.cert);
    json!({
        "certificate": server_pem(&b.build()),
        "issuingCaCertificate": ca_pem,
        "certificateChain": ca_pem,
        "privateKey": String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        "serialNumber": serial_hex,
    })
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.contains('.')
        && !s.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit()))
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        })
}

fn is_email(s: &str) -> bool {
    matches!(s.split_once('@'), Some((user, host)) if !user.is_empty() && is_hostname(host))
}

/// `POST /api/v1/pki/ca/:caId/issue-certificate` (the 2024 server).
pub(super) fn issue_from_ca(state: &mut State, ca_id: &str, body: &Value) -> Result<Value, Fail> {
    let cn = str_field(body, "commonName").unwrap_or_default().to_owned();
    let ttl = str_field(body, "ttl").unwrap_or("90d");
    let alt = str_field(body, "altNames").unwrap_or_default();
    let names: Vec<&str> = alt.split(',').filter(|s| !s.is_empty()).collect();
    if names.iter().any(|n| !is_hostname(n) && !is_email(n)) {
        return Err(Fail::Validation(vec![json!({
            "code": "custom",
            "message": "Each alt name must be a valid hostname or email address",
            "path": ["altNames"],
        })]));
    }
    let ttl = ttl_secs(ttl).ok_or_else(|| Fail::BadRequest {
        error: "BadRequest",
        message: "Invalid TTL format".into(),
    })?;
    let now = issued_at(state);
    let ca = state.pki.cas.get(ca_id).ok_or_else(ca_not_found)?;
    let alt_names: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let kind = if is_email(n) { "email" } else { "dns_name" };
            (kind.to_owned(), (*n).to_owned())
        })
        .collect();
    let out = mint(ca, now, &cn, &alt_names, ttl);
    state.pki.issued += 1;
    state.pki.leaves.insert(
        out["serialNumber"].as_str().unwrap().to_owned(),
        Leaf {
            id: uuid(),
            ca_id: ca_id.to_owned(),
            common_name: cn,
            alt_names: names.join(", "),
            not_before: now - 60,
            not_after: now + ttl,
            created_at: now,
            revoked_at: None,
        },
    );
    Ok(out)
}

/// When a certificate issued now starts: the virtual now, less any backdating.
fn issued_at(state: &State) -> u64 {
    state.now - state.pki.backdate
}

fn profile_ca<'a>(state: &'a State, profile_id: &str) -> Result<&'a Ca, Fail> {
    state
        .pki
        .profiles
        .get(profile_id)
        .and_then(|ca| state.pki.cas.get(ca))
        .ok_or_else(|| Fail::NotFound {
            legacy_error: "NotFound",
            message: format!("Certificate profile with ID '{profile_id}' not found"),
        })
}

fn mint_issued(state: &State, id: &str, issued: &Issued) -> Result<Value, Fail> {
    let ca = profile_ca(state, &issued.profile_id)?;
    let mut out = mint(
        ca,
        issued_at(state),
        &issued.common_name,
        &issued.alt_names,
        issued.ttl,
    );
    out["certificateId"] = json!(id);
    Ok(out)
}

/// `POST /api/v1/cert-manager/certificates`.
pub(super) fn create(state: &mut State, body: &Value) -> Result<Value, Fail> {
    let profile_id = str_field(body, "profileId").unwrap_or_default().to_owned();
    profile_ca(state, &profile_id)?;
    let attrs = &body["attributes"];
    let alt_names: Vec<(String, String)> = attrs["altNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["type"].as_str().unwrap_or("dns_name").to_owned(),
                        n["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ttl = ttl_secs(attrs["ttl"].as_str().unwrap_or("30d")).ok_or_else(|| {
        Fail::Validation(vec![
            json!({"code": "custom", "message": "Invalid ttl", "path": ["attributes", "ttl"]}),
        ])
    })?;
    let issued = Issued {
        profile_id,
        common_name: attrs["commonName"].as_str().unwrap_or_default().to_owned(),
        alt_names,
        ttl,
    };
    let id = uuid();
    let request_id = uuid();
    state.pki.certs.insert(id.clone(), issued.clone());
    state.pki.issued += 1;
    if state.pki.pending > 0 {
        let polls = state.pki.pending;
        state.pki.requests.insert(request_id.clone(), (id, polls));
        return Ok(json!({
            "certificate": null,
            "certificateRequestId": request_id,
            "status": "pending",
            "message": "Certificate request submitted",
        }));
    }
    state
        .pki
        .requests
        .insert(request_id.clone(), (id.clone(), 0));
    let cert = mint_issued(state, &id, &issued)?;
    Ok(json!({"certificate": cert, "certificateRequestId": request_id, "status": "issued"}))
}

/// `GET /api/v1/cert-manager/certificates/certificate-requests/:id`.
pub(super) fn request(state: &mut State, request_id: &str) -> Result<Value, Fail> {
    let entry = state
        .pki
        .requests
        .get_mut(request_id)
        .ok_or_else(|| Fail::NotFound {
            legacy_error: "NotFound",
            message: "Certificate request not found".into(),
        })?;
    if entry.1 > 0 {
        entry.1 -= 1;
        return Ok(json!({"status": "pending", "certificate": null, "certificateId": null}));
    }
    Ok(json!({"status": "issued", "certificateId": entry.0, "errorMessage": null}))
}

/// `GET /api/v1/cert-manager/certificates/:id/bundle`.
pub(super) fn bundle(state: &mut State, id: &str) -> Result<Value, Fail> {
    let issued = certificate(state, id)?;
    let full = mint_issued(state, id, &issued)?;
    Ok(json!({
        "certificate": full["certificate"],
        "certificateChain": full["certificateChain"],
        "privateKey": full["privateKey"],
        "serialNumber": full["serialNumber"],
    }))
}

fn certificate(state: &State, id: &str) -> Result<Issued, Fail> {
    state
        .pki
        .certs
        .get(id)
        .cloned()
        .ok_or_else(|| Fail::NotFound {
            legacy_error: "NotFound",
            message: format!("Certificate with ID '{id}' not found"),
        })
}

/// `POST /api/v1/cert-manager/certificates/:id/renew`: a new certificate (new ID), flat.
pub(super) fn renew(state: &mut State, id: &str) -> Result<Value, Fail> {
    let issued = certificate(state, id)?;
    let new_id = uuid();
    state.pki.certs.insert(new_id.clone(), issued.clone());
    state.pki.renewed += 1;
    let mut out = mint_issued(state, &new_id, &issued)?;
    out["certificateRequestId"] = json!(uuid());
    Ok(out)
}
