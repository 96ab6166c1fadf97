//! Machine-identity auth: getting a usable access token for an auth configuration (memory,
//! then the cache file, then renew or log in), and the logins themselves: universal-auth,
//! GCP and Azure here, AWS in `aws.rs`.
//!
//! A metadata server that fails is reported as what it is ("cannot get a GCP identity token
//! from the metadata server at ..."), never as an Infisical error: the original reported
//! those as Infisical 401s and missing secrets.
//!
//! Overridable endpoints (for tests, emulators and unusual networks):
//! `GCE_METADATA_HOST` (host[:port], Google's own variable), `AZURE_POD_IDENTITY_AUTHORITY_HOST`
//! (a base URL, as the Azure identity SDKs read it), and for AWS
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::access_token::{cache_key, Grant, Next, Token};
use super::http::Class;
use super::{epoch, failed, secret_json, Infisical};
use crate::config::{AuthConfig, AuthMethod};
use crate::error::Result;
use crate::secret::SecretString;

/// Metadata servers answer within milliseconds where they exist; off-cloud the address does
/// not answer at all, and waiting the full request timeout for that helps nobody.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// An auth configuration with its token cache key.
pub(crate) struct Auth {
    pub config: AuthConfig,
    pub key: String,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Auth {
        let key = cache_key(
            config.method.as_str(),
            config.identity_id.as_deref(),
            config.client_id.as_deref(),
        );
        Auth { config, key }
    }

    /// "universal-auth (client ID abc)": names the identity, never a secret.
    fn describe(&self) -> String {
        let c = &self.config;
        match (&c.identity_id, &c.client_id) {
            (_, Some(id)) if c.method == AuthMethod::UniversalAuth => {
                format!("{} (client ID {id})", c.method.as_str())
            }
            (Some(id), _) => format!("{} (identity {id})", c.method.as_str()),
            _ => c.method.as_str().to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct GrantBody {
    #[serde(rename = "accessToken")]
    access: SecretString,
    #[serde(rename = "expiresIn")]
    ttl: u64,
    #[serde(rename = "accessTokenMaxTTL", default)]
    max_ttl: u64,
}

impl Infisical {
    /// A token for `auth`. `refused` is a token the server just refused: unless another
    /// caller has already replaced it, log in again instead of using or renewing it.
    ///
    /// The slot's lock is held across the login, so callers that need a token for the same
    /// auth at the same moment wait for one login and share its token.
    pub(super) async fn token(
        &self,
        auth: &Auth,
        refused: Option<&SecretString>,
    ) -> Result<SecretString> {
        let inner = &self.inner;
        let slot = inner.tokens.slot(&auth.key);
        let mut held = slot.lock().await;
        if held.is_none() {
            *held = inner.tokens.load(&auth.key);
        }
        let now = epoch(inner.clock.now());
        let next = match held.as_ref() {
            None => Next::Login,
            Some(token) if refused == Some(&token.access) => Next::Login,
            Some(token) => token.next(now),
        };
        let token = match (next, held.as_ref()) {
            (Next::Use, Some(token)) => return Ok(token.access.clone()),
            (Next::Renew, Some(token)) => match self.renew(token).await {
                Ok(grant) => token.renewed(grant, now, inner.token_cap),
                Err(err) => {
                    tracing::info!(auth = %auth.describe(), error = %err, "token renewal failed; logging in again");
                    Token::from_login(self.login(auth).await?, now, inner.token_cap)
                }
            },
            _ => Token::from_login(self.login(auth).await?, now, inner.token_cap),
        };
        if let Err(err) = inner.tokens.save(&auth.key, &token) {
            tracing::warn!(error = %err, "cannot cache the Infisical token; keeping it in memory only");
        }
        let access = token.access.clone();
        *held = Some(token);
        Ok(access)
    }

    /// Authenticates every configured auth: the global one (labelled `global`), then each
    /// project with an auth of its own (`project:<alias>`). With `fresh`, each one logs in
    /// to Infisical (the token cache is bypassed, then updated with the new token); without
    /// it, a cached token that is still usable counts as success (`psi infisical login`).
    pub async fn login_all(&self, fresh: bool) -> Vec<(String, Result<()>)> {
        let inner = &self.inner;
        let mut auths: Vec<(String, &Auth)> = Vec::new();
        if let Some(global) = &inner.global {
            auths.push(("global".to_owned(), global));
        }
        for project in inner.projects.values() {
            let shared = inner
                .global
                .as_ref()
                .is_some_and(|global| std::sync::Arc::ptr_eq(global, &project.auth));
            if !shared {
                auths.push((format!("project:{}", project.alias), &project.auth));
            }
        }
        let mut out = Vec::with_capacity(auths.len());
        for (label, auth) in auths {
            let result = if fresh {
                self.fresh_token(auth).await
            } else {
                self.token(auth, None).await.map(drop)
            };
            out.push((label, result));
        }
        out
    }

    /// Logs in with `auth` whatever the cache holds, and keeps the new token (memory and
    /// cache file) for later callers.
    async fn fresh_token(&self, auth: &Auth) -> Result<()> {
        let inner = &self.inner;
        let slot = inner.tokens.slot(&auth.key);
        let mut held = slot.lock().await;
        let now = epoch(inner.clock.now());
        let token = Token::from_login(self.login(auth).await?, now, inner.token_cap);
        if let Err(err) = inner.tokens.save(&auth.key, &token) {
            tracing::warn!(error = %err, "cannot cache the Infisical token; keeping it in memory only");
        }
        *held = Some(token);
        Ok(())
    }

    async fn renew(&self, token: &Token) -> Result<Grant> {
        #[derive(Serialize)]
        struct Renew<'a> {
            #[serde(rename = "accessToken")]
            access: &'a str,
        }
        let body = secret_json(&Renew {
            access: token.access.expose(),
        });
        self.grant("/api/v1/auth/token/renew", &body, "token renewal")
            .await
    }

    async fn login(&self, auth: &Auth) -> Result<Grant> {
        #[derive(Serialize)]
        struct Universal<'a> {
            #[serde(rename = "clientId")]
            client_id: &'a str,
            #[serde(rename = "clientSecret")]
            client_secret: &'a str,
        }
        #[derive(Serialize)]
        struct Jwt<'a> {
            #[serde(rename = "identityId")]
            identity_id: &'a str,
            jwt: &'a str,
        }
        let c = &auth.config;
        // Config validation guarantees these; the messages are for a hand-built config.
        let identity = || {
            c.identity_id
                .as_deref()
                .ok_or_else(|| failed(format!("{} requires identity_id", c.method.as_str())))
        };
        let (path, body) = match c.method {
            AuthMethod::UniversalAuth => {
                let (Some(id), Some(secret)) = (&c.client_id, &c.client_secret) else {
                    return Err(failed(
                        "universal-auth requires client_id and client_secret".into(),
                    ));
                };
                let body = secret_json(&Universal {
                    client_id: id,
                    client_secret: secret.expose(),
                });
                ("universal-auth", body)
            }
            AuthMethod::AwsIam => ("aws-auth", self.aws_login_body(auth).await?),
            AuthMethod::Gcp => {
                let jwt = self.gcp_identity_token(identity()?).await?;
                let body = secret_json(&Jwt {
                    identity_id: identity()?,
                    jwt: &jwt,
                });
                ("gcp-auth", body)
            }
            AuthMethod::Azure => {
                let jwt = self.azure_access_token().await?;
                let body = secret_json(&Jwt {
                    identity_id: identity()?,
                    jwt: jwt.expose(),
                });
                ("azure-auth", body)
            }
        };
        let what = format!("login with {}", auth.describe());
        let grant = self
            .grant(&format!("/api/v1/auth/{path}/login"), &body, &what)
            .await?;
        tracing::info!(auth = %auth.describe(), ttl = grant.ttl, max_ttl = grant.max_ttl, "logged in to Infisical");
        Ok(grant)
    }

    /// POSTs a JSON body to an auth endpoint and reads the 4-field grant it answers.
    async fn grant(&self, path: &str, body: &[u8], what: &str) -> Result<Grant> {
        let inner = &self.inner;
        let url = self.endpoint(path);
        let reply = inner
            .http
            .send(path, || {
                inner
                    .http
                    .client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec())
            })
            .await
            .map_err(|attempt| self.unreachable(what, attempt))?;
        if reply.class() != Class::Success {
            return Err(failed(format!("{what} failed: {}", reply.api_error())));
        }
        let body: GrantBody = reply
            .json()
            .map_err(|why| failed(format!("{what}: {why}")))?;
        Ok(Grant {
            access: body.access,
            ttl: body.ttl,
            max_ttl: body.max_ttl,
        })
    }

    /// GCE's identity token for audience `identity_id` (Infisical checks the audience).
    async fn gcp_identity_token(&self, identity_id: &str) -> Result<Zeroizing<String>> {
        let host = self
            .env("GCE_METADATA_HOST")
            .unwrap_or_else(|| "metadata.google.internal".into());
        let mut url = metadata_url(
            &format!("http://{host}"),
            "/computeMetadata/v1/instance/service-accounts/default/identity",
        )?;
        url.query_pairs_mut()
            .append_pair("audience", identity_id)
            .append_pair("format", "full");
        let body = self
            .metadata(
                "a GCP identity token",
                Method::GET,
                url,
                &[("Metadata-Flavor", "Google")],
            )
            .await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| failed("the GCP identity token is not text".into()))?;
        Ok(Zeroizing::new(text.trim().to_owned()))
    }

    /// An Azure managed-identity access token for Azure Resource Manager.
    async fn azure_access_token(&self) -> Result<SecretString> {
        #[derive(Deserialize)]
        struct Body {
            access_token: SecretString,
        }
        let base = self
            .env("AZURE_POD_IDENTITY_AUTHORITY_HOST")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        let mut url = metadata_url(&base, "/metadata/identity/oauth2/token")?;
        url.query_pairs_mut()
            .append_pair("api-version", "2018-02-01")
            .append_pair("resource", "https://management.azure.com/");
        let what = "an Azure managed-identity token";
        let body = self
            .metadata(what, Method::GET, url, &[("Metadata", "true")])
            .await?;
        let body: Body = serde_json::from_slice(&body)
            .map_err(|err| failed(format!("{what}: unexpected response: {err}")))?;
        Ok(body.access_token)
    }

    /// One request to a cloud metadata server; failures say which server and what for.
    pub(super) async fn metadata(
        &self,
        what: &str,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let inner = &self.inner;
        let mut shown = url.clone();
        shown.set_query(None);
        let context = format!("cannot get {what} from the metadata server at {shown}");
        let timeout = METADATA_TIMEOUT.min(inner.timeout);
        let reply = inner
            .http
            .send(shown.as_str(), || {
                let mut request = inner
                    .http
                    .client
                    .request(method.clone(), url.clone())
                    .timeout(timeout);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request
            })
            .await
            .map_err(|attempt| attempt.into_error(&context))?;
        if !(200..300).contains(&reply.status) {
            return Err(failed(format!("{context}: {}", reply.api_error())));
        }
        Ok(reply.body)
    }
}

/// `base` (a URL, maybe with a trailing slash) joined with an absolute `path`.
pub(super) fn metadata_url(base: &str, path: &str) -> Result<Url> {
    let text = format!("{}{path}", base.trim_end_matches('/'));
    Url::parse(&text).map_err(|err| failed(format!("invalid metadata endpoint {text}: {err}")))
}
