//! The HTTP surface as pure functions: routing, percent-decoding, traversal, auth, and the
//! status code and JSON body of every error.

use hyper::Method;
use psi::error::Error;
use psi::secret::{SecretId, SecretString};
use psi::server::routes::{
    authorize, cache_health, error_response, percent_decode, route, without_paths, Route,
};

fn id(s: &str) -> SecretId {
    SecretId::parse(s).unwrap()
}

#[test]
fn routes_of_the_original() {
    assert_eq!(route(&Method::GET, "/healthz").unwrap(), Route::Healthz);
    assert_eq!(route(&Method::GET, "/healthz/").unwrap(), Route::Healthz);
    assert_eq!(route(&Method::GET, "/list").unwrap(), Route::List);
    assert_eq!(
        route(&Method::GET, "/lookup/abc").unwrap(),
        Route::Lookup(id("abc"))
    );
    assert_eq!(
        route(&Method::POST, "/store/abc").unwrap(),
        Route::Store(id("abc"))
    );
    assert_eq!(
        route(&Method::DELETE, "/delete/abc").unwrap(),
        Route::Delete(id("abc"))
    );
}

#[test]
fn ids_are_percent_decoded() {
    assert_eq!(
        route(&Method::GET, "/lookup/my%2Dapp--DB%5FHOST").unwrap(),
        Route::Lookup(id("my-app--DB_HOST"))
    );
    assert_eq!(
        route(&Method::GET, "/lookup/caf%C3%A9").unwrap(),
        Route::Lookup(id("café"))
    );
    assert_eq!(percent_decode("a%2fb").unwrap(), b"a/b");
    assert!(percent_decode("a%2").is_none());
    assert!(percent_decode("a%zz").is_none());
}

#[test]
fn traversal_and_bad_ids_are_400() {
    for path in [
        "/lookup/..",
        "/lookup/.",
        "/lookup/%2e%2e",
        "/lookup/..%2Fetc%2Fpasswd",
        "/lookup/a%2Fb",
        "/lookup/a%5Cb",
        "/lookup/a/b",
        "/lookup/",
        "/lookup/%00",
        "/lookup/a%0Ab",
        "/lookup/.hidden",
        "/lookup/%zz",
        "/lookup/%FF",
    ] {
        let err = route(&Method::GET, path).unwrap_err();
        assert_eq!(err.http_status(), (400, "invalid_secret_id"), "{path}");
    }
    let long = format!("/lookup/{}", "a".repeat(256));
    assert_eq!(route(&Method::GET, &long).unwrap_err().http_status().0, 400);
    assert_eq!(
        route(&Method::POST, "/store/").unwrap_err().http_status().0,
        400
    );
    assert_eq!(
        route(&Method::DELETE, "/delete/..")
            .unwrap_err()
            .http_status()
            .0,
        400
    );
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    for path in ["/", "/lookup", "/lookups/x", "/healthzz", "/list/x"] {
        assert_eq!(
            route(&Method::GET, path).unwrap_err().http_status(),
            (404, "not_found"),
            "{path}"
        );
    }
    let err = route(&Method::POST, "/lookup/abc").unwrap_err();
    assert_eq!(err.http_status(), (405, "method_not_allowed"));
    assert_eq!(error_response(&err).headers()["allow"], "GET");
    let err = route(&Method::PUT, "/store/abc").unwrap_err();
    assert_eq!(error_response(&err).headers()["allow"], "POST");
    assert_eq!(
        route(&Method::POST, "/healthz")
            .unwrap_err()
            .http_status()
            .0,
        405
    );
    assert_eq!(
        route(&Method::DELETE, "/list").unwrap_err().http_status().0,
        405
    );
}

#[test]
fn auth_is_off_without_a_token_and_healthz_is_always_open() {
    let lookup = route(&Method::GET, "/lookup/abc");
    assert!(authorize(lookup.as_ref(), None, None).is_ok());
    let token = SecretString::new("s3cr3t-token".into());
    assert!(matches!(
        authorize(lookup.as_ref(), Some(&token), None),
        Err(Error::Unauthorized)
    ));
    let healthz = route(&Method::GET, "/healthz");
    assert!(authorize(healthz.as_ref(), Some(&token), None).is_ok());
}

/// The cache's state says what failed on the host: only for holders of the token.
#[test]
fn healthz_cache_needs_the_token() {
    let token = SecretString::new("s3cr3t-token".into());
    let cache = route(&Method::GET, "/healthz/cache");
    assert!(matches!(
        authorize(cache.as_ref(), Some(&token), None),
        Err(Error::Unauthorized)
    ));
    assert!(authorize(cache.as_ref(), Some(&token), Some(b"Bearer s3cr3t-token")).is_ok());
    assert!(authorize(cache.as_ref(), None, None).is_ok());
}

/// `/metrics` says how the host is used: the token rule of `/list`, GET and HEAD only.
#[test]
fn metrics_need_the_token() {
    let token = SecretString::new("s3cr3t-token".into());
    for method in [Method::GET, Method::HEAD] {
        let metrics = route(&method, "/metrics");
        assert_eq!(metrics.as_ref().unwrap(), &Route::Metrics);
        assert!(matches!(
            authorize(metrics.as_ref(), Some(&token), None),
            Err(Error::Unauthorized)
        ));
        assert!(authorize(metrics.as_ref(), Some(&token), Some(b"Bearer s3cr3t-token")).is_ok());
    }
    assert!(matches!(
        route(&Method::POST, "/metrics"),
        Err(Error::MethodNotAllowed {
            allow: "GET, HEAD",
            ..
        })
    ));
}

#[tokio::test]
async fn cache_health_errors_name_no_absolute_path() {
    use http_body_util::BodyExt;
    let error = "cannot read /var/lib/psi/cache.enc: Permission denied (os error 13); key '/etc/psi/cache-key.cred', see /run/x/";
    let response = cache_health(None, Some(error));
    assert_eq!(response.status(), 503);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        "cannot read cache.enc: Permission denied (os error 13); key 'cache-key.cred', see x"
    );
    let health = psi::cache::live::Health {
        loaded: true,
        entries: 1,
        version: Some(2),
        error: Some("cannot decrypt /var/lib/psi/cache.enc.".into()),
    };
    let body = cache_health(Some(&health), None)
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "cannot decrypt cache.enc.");
    // Slashes inside words are not paths.
    assert_eq!(without_paths("a/b and 1/2 and=/x/y"), "a/b and 1/2 and=y");
}

#[test]
fn bearer_token_must_match_exactly() {
    let token = SecretString::new("s3cr3t-token".into());
    let list = route(&Method::GET, "/list");
    let check = |header: &[u8]| authorize(list.as_ref(), Some(&token), Some(header)).is_ok();
    assert!(check(b"Bearer s3cr3t-token"));
    assert!(!check(b"Bearer s3cr3t-tokenx"));
    assert!(!check(b"Bearer s3cr3t-toke"));
    // The scheme is case-insensitive (RFC 9110), the token is not.
    assert!(check(b"bearer s3cr3t-token"));
    assert!(check(b"BEARER s3cr3t-token"));
    assert!(!check(b"Bearer S3CR3T-TOKEN"));
    assert!(!check(b"Basic s3cr3t-token"));
    assert!(!check(b"Bearer  s3cr3t-token"));
    assert!(!check(b"s3cr3t-token"));
    assert!(!check(b""));
    // Route errors do not bypass auth: an unauthenticated caller learns nothing about IDs.
    let bad = route(&Method::GET, "/lookup/..");
    assert!(authorize(bad.as_ref(), Some(&token), None).is_err());
    let unknown = route(&Method::GET, "/nope");
    assert!(authorize(unknown.as_ref(), Some(&token), None).is_err());
}

async fn body_of(err: Error) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt;
    let response = error_response(&err);
    let status = response.status().as_u16();
    let ctype = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn every_error_has_its_status_and_a_json_body() {
    let provider = "systemd-creds";
    let cases = [
        (Error::InvalidId("x".into()), 400, "invalid_secret_id"),
        (Error::InvalidBody("x".into()), 400, "invalid_request"),
        (Error::Unauthorized, 401, "unauthorized"),
        (Error::NoRoute, 404, "not_found"),
        (Error::NoMapping("abc".into()), 404, "not_found"),
        (
            Error::SecretNotFound {
                provider,
                detail: "gone".into(),
            },
            404,
            "secret_not_found",
        ),
        (
            Error::MethodNotAllowed {
                method: "PUT".into(),
                allow: "GET",
            },
            405,
            "method_not_allowed",
        ),
        (Error::Timeout("slow".into()), 408, "request_timeout"),
        (Error::BodyTooLarge { limit: 1 }, 413, "payload_too_large"),
        (
            Error::CorruptMapping {
                id: "a".into(),
                reason: "not JSON".into(),
            },
            500,
            "corrupt_mapping",
        ),
        (
            Error::UnknownProvider {
                name: "x".into(),
                configured: "y".into(),
            },
            500,
            "unknown_provider",
        ),
        (
            Error::Provider {
                provider,
                detail: "bad".into(),
            },
            502,
            "provider_error",
        ),
        (
            Error::ProviderUnavailable {
                provider,
                detail: "down".into(),
            },
            503,
            "provider_unavailable",
        ),
    ];
    for (err, status, code) in cases {
        let detail = err.to_string();
        let (got, ctype, body) = body_of(err.context("lookup abc")).await;
        assert_eq!(got, status, "{code}");
        assert_eq!(ctype.as_deref(), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], code);
        // The detail is the error's own text (with its context), except for the two fixed
        // bodies kept from the original.
        if detail == "invalid or missing token" || detail == "not found" {
            assert_eq!(json["detail"], detail.as_str(), "{body}");
        } else {
            assert_eq!(
                json["detail"],
                format!("lookup abc: {detail}").as_str(),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn unauthorized_body_is_the_originals_byte_for_byte() {
    let (status, _, body) = body_of(Error::Unauthorized).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        r#"{"error": "unauthorized", "detail": "invalid or missing token"}"#
    );
    assert_eq!(body.len(), 63);
}

#[test]
fn cache_reload_is_a_post_that_needs_the_token() {
    let reload = route(&Method::POST, "/cache/reload");
    assert_eq!(reload.as_ref().unwrap(), &Route::CacheReload);
    let err = route(&Method::GET, "/cache/reload").unwrap_err();
    assert_eq!(err.http_status().0, 405);
    assert_eq!(
        error_response(&err).headers()["allow"].to_str().unwrap(),
        "POST"
    );
    let token = SecretString::new("s3cr3t-token".into());
    assert!(matches!(
        authorize(reload.as_ref(), Some(&token), None),
        Err(Error::Unauthorized)
    ));
    assert!(authorize(reload.as_ref(), Some(&token), Some(b"Bearer s3cr3t-token")).is_ok());
}
