//! Machine-identity logins and access tokens, as the real server does them: HS256 JWTs whose
//! `exp` is iat + max TTL, backed by a token row whose TTL is checked (and the row deleted)
//! on every use and renewal.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::routes::{require_strings, str_field, Fail};
use super::state::{uuid, State, Ttls};

pub(super) struct Token {
    pub identity_id: String,
    pub created: u64,
    pub renewed: u64,
    pub ttls: Ttls,
}

/// An AWS IAM login as the fake decoded it (the signature cannot be checked without the
/// caller's secret key, so tests assert on what was sent).
#[derive(Clone, Debug)]
pub struct AwsLogin {
    pub identity_id: String,
    pub method: String,
    /// `iamRequestBody`, decoded.
    pub body: String,
    /// `iamRequestHeaders`, decoded (names as sent).
    pub headers: BTreeMap<String, String>,
    /// From the `Credential=` part of the Authorization header.
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub accepted: bool,
}

const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

fn sign(key: &[u8], data: &str) -> String {
    let key = openssl::pkey::PKey::hmac(key).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    signer.update(data.as_bytes()).unwrap();
    URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap())
}

/// An HS256 JWT with `claims`, signed with `key`. Tests use it to forge tokens too.
pub fn jwt(key: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = sign(key, &signed);
    format!("{signed}.{signature}")
}

/// Creates a token row for `identity_id` and returns the login body.
fn issue(state: &mut State, identity_id: &str, ttls: Ttls) -> Value {
    let token_id = uuid();
    let mut claims = json!({
        "identityId": identity_id,
        "clientSecretId": uuid(),
        "identityAccessTokenId": token_id,
        "authTokenType": "identityAccessToken",
        "iat": state.now,
    });
    // Like the real server: the JWT lives for the max TTL (none when it is 0).
    if ttls.max_ttl > 0 {
        claims["exp"] = json!(state.now + ttls.max_ttl);
    }
    let access_token = jwt(&state.jwt_key, &claims);
    state.tokens.insert(
        token_id,
        Token {
            identity_id: identity_id.to_owned(),
            created: state.now,
            renewed: state.now,
            ttls,
        },
    );
    state.logins += 1;
    token_body(&access_token, ttls)
}

fn token_body(access_token: &str, ttls: Ttls) -> Value {
    json!({
        "accessToken": access_token,
        "expiresIn": ttls.ttl,
        "accessTokenMaxTTL": ttls.max_ttl,
        "tokenType": "Bearer",
    })
}

/// Checks the JWT and its token row; returns the token id. A row past its TTL is deleted.
fn verify(state: &mut State, token: &str) -> Result<String, Fail> {
    let parts: Vec<&str> = token.split('.').collect();
    let claims = match parts.as_slice() {
        [header, payload, _] => URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|_| URL_SAFE_NO_PAD.decode(payload).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok()),
        _ => None,
    };
    let Some(claims) = claims else {
        return Err(Fail::Jwt("jwt malformed"));
    };
    if sign(&state.jwt_key, &format!("{}.{}", parts[0], parts[1])) != parts[2] {
        return Err(Fail::Jwt("invalid signature"));
    }
    if claims["exp"].as_u64().is_some_and(|exp| state.now >= exp) {
        return Err(Fail::Jwt("jwt expired"));
    }
    let token_id = claims["identityAccessTokenId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(row) = state.tokens.get(&token_id) else {
        return Err(Fail::Unauthorized(
            "You are not allowed to access this resource".into(),
        ));
    };
    // TTL 0 means the token only ends with its max TTL.
    if row.ttls.ttl > 0 && state.now > row.renewed + row.ttls.ttl {
        state.tokens.remove(&token_id);
        return Err(Fail::Unauthorized(
            "Failed to renew MI access token due to TTL expiration".into(),
        ));
    }
    Ok(token_id)
}

/// The identity behind an `Authorization: Bearer` header.
pub(super) fn authenticate(state: &mut State, header: Option<&str>) -> Result<String, Fail> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or(Fail::TokenMissing)?;
    let token_id = verify(state, token)?;
    Ok(state.tokens[&token_id].identity_id.clone())
}

pub(super) fn universal_auth(state: &mut State, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["clientId", "clientSecret"])?;
    let client = state
        .ua_clients
        .get(str_field(body, "clientId").unwrap())
        .filter(|c| Some(c.secret.as_str()) == str_field(body, "clientSecret"))
        .ok_or_else(|| Fail::Unauthorized("Invalid credentials".into()))?;
    let (identity_id, ttls) = (client.identity_id.clone(), client.ttls);
    Ok(issue(state, &identity_id, ttls))
}

pub(super) fn jwt_login(state: &mut State, method: &str, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["identityId", "jwt"])?;
    let identity_id = str_field(body, "identityId").unwrap().to_owned();
    let (accepted, ttls) = state
        .jwt_logins
        .get(&(method.to_owned(), identity_id.clone()))
        .cloned()
        .ok_or_else(|| Fail::Unauthorized(format!("No {method} auth for this identity")))?;
    if str_field(body, "jwt") != Some(accepted.as_str()) {
        return Err(Fail::Unauthorized("Access denied: invalid JWT".into()));
    }
    Ok(issue(state, &identity_id, ttls))
}

pub(super) fn aws_login(state: &mut State, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["identityId", "iamRequestBody", "iamRequestHeaders"])?;
    let identity_id = str_field(body, "identityId").unwrap().to_owned();
    let denied = |why: &str| Fail::Unauthorized(format!("Access denied: {why}"));
    let decode = |field| {
        STANDARD
            .decode(str_field(body, field).unwrap())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let sts_body = decode("iamRequestBody").ok_or_else(|| denied("bad iamRequestBody"))?;
    let headers: BTreeMap<String, String> = decode("iamRequestHeaders")
        .and_then(|h| serde_json::from_str(&h).ok())
        .ok_or_else(|| denied("iamRequestHeaders is not base64 JSON of string values"))?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let (access_key_id, date, region) = header("Authorization")
        .and_then(parse_sigv4)
        .ok_or_else(|| denied("no AWS4-HMAC-SHA256 Authorization header"))?;
    let valid_region = !region.is_empty()
        && region.len() <= 20
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let accepted = valid_region
        && sts_body == STS_BODY
        && header("X-Amz-Date").is_some()
        && state.aws.contains_key(&identity_id);
    state.aws_logins.push(AwsLogin {
        identity_id: identity_id.clone(),
        method: str_field(body, "iamHttpRequestMethod")
            .unwrap_or("POST")
            .to_owned(),
        body: sts_body.clone(),
        headers: headers.clone(),
        access_key_id,
        date,
        region,
        accepted,
    });
    if !valid_region {
        return Err(Fail::BadRequest {
            error: "BadRequest",
            message: "Invalid AWS region".into(),
        });
    }
    if sts_body != STS_BODY {
        return Err(denied("the STS request is not GetCallerIdentity"));
    }
    if header("X-Amz-Date").is_none() {
        return Err(denied("no X-Amz-Date header"));
    }
    let ttls = *state
        .aws
        .get(&identity_id)
        .ok_or_else(|| denied("no AWS auth for this identity"))?;
    Ok(issue(state, &identity_id, ttls))
}

/// `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/sts/aws4_request, SignedHeaders=...,
/// Signature=<64 hex>` -> (access key id, date, region).
fn parse_sigv4(value: &str) -> Option<(String, String, String)> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed_headers = false;
    let mut signature = false;
    for part in rest.split(',').map(str::trim) {
        if let Some(c) = part.strip_prefix("Credential=") {
            credential = Some(c);
        } else if let Some(h) = part.strip_prefix("SignedHeaders=") {
            signed_headers = !h.is_empty();
        } else if let Some(s) = part.strip_prefix("Signature=") {
            signature = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    match scope.as_slice() {
        [akid, date, region, "sts", "aws4_request"]
            if signed_headers
                && signature
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some((akid.to_string(), date.to_string(), region.to_string()))
        }
        _ => None,
    }
}

pub(super) fn renew(state: &mut State, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["accessToken"])?;
    let access_token = str_field(body, "accessToken").unwrap().to_owned();
    let token_id = verify(state, &access_token)?;
    let now = state.now;
    let row = state.tokens.get_mut(&token_id).unwrap();
    let ttls = row.ttls;
    // The live server failed to renew a fresh token whose TTL equals its max TTL: real time
    // had passed since login. The virtual clock may not have moved, so equality fails here.
    if ttls.max_ttl > 0 && now + ttls.ttl >= row.created + ttls.max_ttl {
        state.tokens.remove(&token_id);
        return Err(Fail::Unauthorized(
            "Failed to renew MI access token past its Max TTL expiration".into(),
        ));
    }
    row.renewed = now;
    Ok(token_body(&access_token, ttls))
}

pub(super) fn revoke(state: &mut State, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["accessToken"])?;
    let token_id = verify(state, str_field(body, "accessToken").unwrap())?;
    state.tokens.remove(&token_id);
    Ok(json!({"message": "Successfully revoked access token"}))
}
