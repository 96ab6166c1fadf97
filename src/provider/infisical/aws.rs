//! aws-iam login: the region, the AWS credentials, and the signed `GetCallerIdentity`
//! request that Infisical replays to STS to learn who we are.
//!
//! Region: `auth.region` in the config, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
//! the EC2 instance identity document. Credentials: `AWS_ACCESS_KEY_ID` +
//! `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or
//! `default`), else the instance role from IMDSv2. IMDS is `http://169.254.169.254` unless
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` says otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::{metadata_url, Auth};
use super::{failed, secret_json, sigv4, Infisical};
use crate::error::Result;
use crate::secret::SecretString;

const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const STS_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

pub(crate) struct Credentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

/// An IMDSv2 session: the session token is fetched once and used for every read.
struct Imds {
    endpoint: String,
    token: Option<Zeroizing<String>>,
}

impl Infisical {
    /// The `aws-auth/login` body: `iamRequestHeaders` is base64 of a JSON map of the signed
    /// request's headers (Infisical forwards them to STS as they are).
    pub(super) async fn aws_login_body(&self, auth: &Auth) -> Result<Zeroizing<Vec<u8>>> {
        #[derive(Serialize)]
        struct Login<'a> {
            #[serde(rename = "identityId")]
            identity_id: &'a str,
            #[serde(rename = "iamHttpRequestMethod")]
            method: &'a str,
            #[serde(rename = "iamRequestBody")]
            body: &'a str,
            #[serde(rename = "iamRequestHeaders")]
            headers: &'a str,
        }
        let identity_id = auth
            .config
            .identity_id
            .as_deref()
            .ok_or_else(|| failed("aws-iam requires identity_id".into()))?;
        let mut imds = Imds {
            endpoint: self
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".into()),
            token: None,
        };
        let region = self
            .aws_region(auth.config.region.as_deref(), &mut imds)
            .await?;
        let credentials = self.aws_credentials(&mut imds).await?;
        let headers = signed_headers(
            &credentials,
            &region,
            &sigv4::amz_date(self.inner.clock.now()),
        );
        let headers = Zeroizing::new(B64.encode(secret_json(&headers).as_slice()));
        Ok(secret_json(&Login {
            identity_id,
            method: "POST",
            body: &B64.encode(STS_BODY),
            headers: &headers,
        }))
    }

    async fn aws_region(&self, configured: Option<&str>, imds: &mut Imds) -> Result<String> {
        if let Some(region) = configured
            .map(str::to_owned)
            .or_else(|| self.env("AWS_REGION"))
            .or_else(|| self.env("AWS_DEFAULT_REGION"))
        {
            return Ok(region);
        }
        #[derive(Deserialize)]
        struct Document {
            region: String,
        }
        let what = "the AWS region (instance identity document)";
        let body = self
            .imds_get(imds, what, "/latest/dynamic/instance-identity/document")
            .await
            .map_err(|err| {
                err.context("no AWS region configured (auth.region, AWS_REGION or AWS_DEFAULT_REGION) and none from EC2")
            })?;
        let document: Document = serde_json::from_slice(&body)
            .map_err(|err| failed(format!("{what}: unexpected response: {err}")))?;
        Ok(document.region)
    }

    async fn aws_credentials(&self, imds: &mut Imds) -> Result<Credentials> {
        if let (Some(id), Some(secret)) = (
            self.env("AWS_ACCESS_KEY_ID"),
            self.env("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: SecretString::new(secret),
                session_token: self.env("AWS_SESSION_TOKEN").map(SecretString::new),
            });
        }
        let file = self
            .env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                self.env("HOME")
                    .map(|h| PathBuf::from(h).join(".aws/credentials"))
            });
        let profile = self.env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        if let Some(path) = &file {
            match crate::fsutil::read_capped_text(path, crate::fsutil::CONFIG) {
                Ok(text) => {
                    if let Some(credentials) = profile_credentials(&text, &profile) {
                        return Ok(credentials);
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(failed(format!(
                        "cannot read AWS credentials file {}: {err}",
                        path.display()
                    )))
                }
            }
        }
        let tried = format!(
            "no AWS credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY{} and none from EC2",
            file.map(|f| format!(" or {} (profile {profile})", f.display()))
                .unwrap_or_default()
        );
        let role = self
            .imds_get(
                imds,
                "the EC2 instance role",
                "/latest/meta-data/iam/security-credentials/",
            )
            .await
            .map_err(|err| err.context(tried.clone()))?;
        let role = String::from_utf8_lossy(&role)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if role.is_empty() {
            return Err(failed(format!("{tried}: the instance has no IAM role")));
        }
        #[derive(Deserialize)]
        struct Role {
            #[serde(rename = "AccessKeyId")]
            access_key_id: String,
            #[serde(rename = "SecretAccessKey")]
            secret_access_key: SecretString,
            #[serde(rename = "Token")]
            token: Option<SecretString>,
        }
        let what = "the EC2 instance role's credentials";
        let body = self
            .imds_get(
                imds,
                what,
                &format!("/latest/meta-data/iam/security-credentials/{role}"),
            )
            .await?;
        let role: Role = serde_json::from_slice(&body)
            .map_err(|err| failed(format!("{what}: unexpected response: {err}")))?;
        Ok(Credentials {
            access_key_id: role.access_key_id,
            secret_access_key: role.secret_access_key,
            session_token: role.token,
        })
    }

    /// An IMDSv2 read: a session token first (PUT), then the GET with it.
    async fn imds_get(
        &self,
        imds: &mut Imds,
        what: &str,
        path: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if imds.token.is_none() {
            let url = metadata_url(&imds.endpoint, "/latest/api/token")?;
            let body = self
                .metadata(
                    "an IMDSv2 session token",
                    Method::PUT,
                    url,
                    &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
                )
                .await?;
            imds.token = Some(Zeroizing::new(String::from_utf8_lossy(&body).trim().into()));
        }
        let token = imds.token.as_deref().map_or("", String::as_str);
        let url = metadata_url(&imds.endpoint, path)?;
        self.metadata(
            what,
            Method::GET,
            url,
            &[("X-aws-ec2-metadata-token", token)],
        )
        .await
    }
}

/// The headers of the signed STS request, as Infisical's Go SDK sends them: the signed ones,
/// `Authorization`, and `Content-Length`.
fn signed_headers(
    credentials: &Credentials,
    region: &str,
    amz_date: &str,
) -> BTreeMap<&'static str, String> {
    let host = format!("sts.{region}.amazonaws.com");
    let mut signed = vec![
        ("Host", host.as_str()),
        ("Content-Type", STS_CONTENT_TYPE),
        ("X-Amz-Date", amz_date),
    ];
    if let Some(token) = &credentials.session_token {
        signed.push(("X-Amz-Security-Token", token.expose()));
    }
    let authorization = sigv4::authorization(
        &sigv4::Request {
            method: "POST",
            path: "/",
            headers: &signed,
            body: STS_BODY.as_bytes(),
        },
        &sigv4::Scope {
            access_key_id: &credentials.access_key_id,
            secret_access_key: credentials.secret_access_key.expose(),
            region,
            service: "sts",
            amz_date,
        },
    );
    let mut headers: BTreeMap<&'static str, String> = signed
        .into_iter()
        .map(|(name, value)| (name, value.to_owned()))
        .collect();
    headers.insert("Content-Length", STS_BODY.len().to_string());
    headers.insert("Authorization", authorization);
    headers
}

/// The keys of `[profile]` in a shared credentials file (INI: `key = value`, `#`/`;`
/// comments).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = None;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim());
            continue;
        }
        if section != Some(profile) {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(SecretString::new(value)),
                "aws_session_token" => token = Some(SecretString::new(value)),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credentials_profiles() {
        let text = "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key=sdefault\n\n[work]\nAWS_ACCESS_KEY_ID = AKIDWORK\naws_secret_access_key = swork\naws_session_token = tok\n[empty]\n";
        let default = profile_credentials(text, "default").unwrap();
        assert_eq!(default.access_key_id, "AKIDDEFAULT");
        assert_eq!(default.secret_access_key.expose(), "sdefault");
        assert!(default.session_token.is_none());
        let work = profile_credentials(text, "work").unwrap();
        assert_eq!(work.access_key_id, "AKIDWORK");
        assert_eq!(work.session_token.unwrap().expose(), "tok");
        assert!(profile_credentials(text, "empty").is_none());
        assert!(profile_credentials(text, "missing").is_none());
    }

    #[test]
    fn signed_sts_request_headers() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::new("secret".into()),
            session_token: Some(SecretString::new("session".into())),
        };
        let headers = signed_headers(&credentials, "eu-west-1", "20240101T000000Z");
        let names: Vec<_> = headers.keys().copied().collect();
        assert_eq!(
            names,
            [
                "Authorization",
                "Content-Length",
                "Content-Type",
                "Host",
                "X-Amz-Date",
                "X-Amz-Security-Token"
            ]
        );
        assert_eq!(headers["Host"], "sts.eu-west-1.amazonaws.com");
        assert_eq!(headers["Content-Length"], "43");
        assert!(headers["Authorization"].starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ));
    }
}
