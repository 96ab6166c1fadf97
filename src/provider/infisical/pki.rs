//! PKI: issuing and renewing TLS certificates with Infisical.
//!
//! Two server generations:
//! - newest ("cert-manager"): `POST /api/v1/cert-manager/certificates` with a certificate
//!   profile; when the answer is not yet `issued` (approval policies, external CAs), the
//!   certificate request is polled at `GET .../certificates/certificate-requests/:id` and the
//!   result fetched from `GET .../certificates/:id/bundle`. Renewal:
//!   `POST .../certificates/:id/renew`.
//! - 2024 server (no profiles): `POST /api/v1/pki/ca/:caId/issue-certificate` with the alt
//!   names as one comma-separated string. It has no renew route, so renewal issues anew.
//!
//! Requests go out with the configured project's token; a refused token means one new login
//! and one more try, as for the secrets API. Private keys stay in [`SecretString`]s and are
//! never logged.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{Class, Reply};
use super::{failed, Infisical, Project};
use crate::error::Result;
use crate::secret::SecretString;

/// How often and how long a pending certificate request is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
const POLL_ATTEMPTS: u32 = 60;

/// What to issue.
pub struct IssueRequest<'a> {
    /// The project alias whose auth is used.
    pub project: &'a str,
    /// The certificate profile (cert-manager API); used unless `ca_id` is set.
    pub profile_id: &'a str,
    /// The CA (2024 API), for servers without certificate profiles.
    pub ca_id: Option<&'a str>,
    pub common_name: &'a str,
    /// `(type, value)`, e.g. `("dns_name", "www.example.com")`.
    pub alt_names: Vec<(&'a str, &'a str)>,
    pub ttl: &'a str,
    pub key_algorithm: Option<&'a str>,
}

/// An issued certificate (PEM texts).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub certificate: String,
    #[serde(default)]
    pub private_key: Option<SecretString>,
    #[serde(default)]
    pub certificate_chain: Option<String>,
    #[serde(default)]
    pub issuing_ca_certificate: Option<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Absent on the 2024 server.
    #[serde(default)]
    pub certificate_id: Option<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial_number", &self.serial_number)
            .field("certificate_id", &self.certificate_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    certificate: Option<Issued>,
    #[serde(default)]
    certificate_request_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    status: String,
    #[serde(default)]
    certificate_id: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

impl Infisical {
    /// Issues a certificate: from `ca_id` on the 2024 API when set, else from `profile_id`.
    pub async fn issue_certificate(&self, request: &IssueRequest<'_>) -> Result<Issued> {
        let project = self.project(request.project)?;
        match request.ca_id {
            Some(ca_id) => self.issue_from_ca(project, ca_id, request).await,
            None => self.issue_from_profile(project, request).await,
        }
    }

    /// Renews certificate `certificate_id` (cert-manager API).
    pub async fn renew_certificate(&self, project: &str, certificate_id: &str) -> Result<Issued> {
        let project = self.project(project)?;
        let path = format!("/api/v1/cert-manager/certificates/{certificate_id}/renew");
        let what = format!("renew certificate {certificate_id}");
        let reply = self
            .pki_call(project, Method::POST, &path, Some(&json!({})))
            .await?;
        self.pki_ok(&reply, &what)?;
        // The renew answer is flat; tolerate a wrapped one too.
        let value: Value = reply
            .json()
            .map_err(|why| failed(format!("{what}: {why}")))?;
        let inner = match value.get("certificate") {
            Some(Value::Object(_)) => value["certificate"].clone(),
            _ => value,
        };
        serde_json::from_value(inner)
            .map_err(|err| failed(format!("{what}: unexpected body: {err}")))
    }

    async fn issue_from_ca(
        &self,
        project: &Project,
        ca_id: &str,
        request: &IssueRequest<'_>,
    ) -> Result<Issued> {
        let what = format!("issue {} from CA {ca_id}", request.common_name);
        let mut body = json!({"commonName": request.common_name, "ttl": request.ttl});
        if !request.alt_names.is_empty() {
            let names: Vec<&str> = request.alt_names.iter().map(|(_, v)| *v).collect();
            body["altNames"] = json!(names.join(","));
        }
        let path = format!("/api/v1/pki/ca/{ca_id}/issue-certificate");
        let reply = self
            .pki_call(project, Method::POST, &path, Some(&body))
            .await?;
        self.pki_ok(&reply, &what)?;
        reply.json().map_err(|why| failed(format!("{what}: {why}")))
    }

    async fn issue_from_profile(
        &self,
        project: &Project,
        request: &IssueRequest<'_>,
    ) -> Result<Issued> {
        let what = format!(
            "issue {} from profile {}",
            request.common_name, request.profile_id
        );
        let mut attributes = json!({"commonName": request.common_name});
        if !request.alt_names.is_empty() {
            let names: Vec<Value> = request
                .alt_names
                .iter()
                .map(|(kind, value)| json!({"type": kind, "value": value}))
                .collect();
            attributes["altNames"] = Value::Array(names);
        }
        if !request.ttl.is_empty() {
            attributes["ttl"] = json!(request.ttl);
        }
        if let Some(algorithm) = request.key_algorithm {
            attributes["keyAlgorithm"] = json!(algorithm);
        }
        let body = json!({"profileId": request.profile_id, "attributes": attributes});
        let reply = self
            .pki_call(
                project,
                Method::POST,
                "/api/v1/cert-manager/certificates",
                Some(&body),
            )
            .await?;
        if reply.class() == Class::RouteMissing {
            return Err(failed(format!(
                "{what}: this Infisical has no cert-manager API; configure ca_id instead of a profile"
            )));
        }
        self.pki_ok(&reply, &what)?;
        let created: CreateBody = reply
            .json()
            .map_err(|why| failed(format!("{what}: {why}")))?;
        if let Some(issued) = created.certificate {
            return Ok(issued);
        }
        let status = created.status.unwrap_or_default();
        if matches!(status.as_str(), "failed" | "rejected") {
            return Err(failed(format!(
                "{what}: request {status}: {}",
                created.message.unwrap_or_default()
            )));
        }
        let request_id = created
            .certificate_request_id
            .ok_or_else(|| failed(format!("{what}: no certificate and no request ID")))?;
        let certificate_id = self.poll(project, &request_id, &what).await?;
        let path = format!("/api/v1/cert-manager/certificates/{certificate_id}/bundle");
        let reply = self.pki_call(project, Method::GET, &path, None).await?;
        self.pki_ok(&reply, &what)?;
        let mut issued: Issued = reply
            .json()
            .map_err(|why| failed(format!("{what}: {why}")))?;
        issued.certificate_id.get_or_insert(certificate_id);
        Ok(issued)
    }

    /// Polls a pending certificate request until it is issued; returns the certificate ID.
    async fn poll(&self, project: &Project, request_id: &str, what: &str) -> Result<String> {
        let path = format!("/api/v1/cert-manager/certificates/certificate-requests/{request_id}");
        for _ in 0..POLL_ATTEMPTS {
            let reply = self.pki_call(project, Method::GET, &path, None).await?;
            self.pki_ok(&reply, what)?;
            let body: RequestBody = reply
                .json()
                .map_err(|why| failed(format!("{what}: {why}")))?;
            match body.status.as_str() {
                "issued" => {
                    return body.certificate_id.ok_or_else(|| {
                        failed(format!("{what}: request issued without a certificate ID"))
                    })
                }
                "failed" | "rejected" => {
                    return Err(failed(format!(
                        "{what}: request {}: {}",
                        body.status,
                        body.error_message.unwrap_or_default()
                    )))
                }
                status => {
                    tracing::info!(request_id, status, "certificate request pending");
                    self.inner.clock.sleep(POLL_INTERVAL).await;
                }
            }
        }
        Err(failed(format!(
            "{what}: request {request_id} still pending after {} s",
            POLL_INTERVAL.as_secs() * u64::from(POLL_ATTEMPTS)
        )))
    }

    fn pki_ok(&self, reply: &Reply, what: &str) -> Result<()> {
        if reply.class() == Class::Success {
            Ok(())
        } else {
            let err = reply.api_error();
            Err(failed(format!("{what}: {err}")))
        }
    }

    /// One authenticated PKI request; a refused token means one new login and one retry.
    async fn pki_call(
        &self,
        project: &Project,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let url = self.endpoint(path);
        let token = self.token(&project.auth, None).await?;
        let reply = self.pki_send(&url, &method, token.expose(), body).await?;
        if reply.class() != Class::Expired {
            return Ok(reply);
        }
        tracing::info!(refusal = %reply.api_error(), "Infisical refused the access token; logging in again");
        let token = self.token(&project.auth, Some(&token)).await?;
        self.pki_send(&url, &method, token.expose(), body).await
    }

    async fn pki_send(
        &self,
        url: &Url,
        method: &Method,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let http = &self.inner.http;
        http.send(url.path(), || {
            let request = http
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token);
            match body {
                Some(body) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string()),
                None => request,
            }
        })
        .await
        .map_err(|attempt| self.unreachable(&format!("{method} {}", url.path()), attempt))
    }
}
