//! Authentication: Basic with static users, Bearer tokens from the built-in
//! token endpoint with per-repository scopes, over HTTP and TLS, with
//! reqwest and with the oci-client crate.

use ::oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use ::oci_client::secrets::RegistryAuth;
use ::oci_client::{Client, Reference};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shim_registry::auth::{Action, Auth, Grant};
use shim_registry::{RegistryBuilder, TlsConfig};

use crate::support::{Running, header, start_with};

fn users(auth: Auth) -> Auth {
    auth.user("admin", "s3cret")
        .user_with("reader", "r", [Grant::new("*", &[Action::Pull])])
        .user_with(
            "team",
            "t",
            [Grant::new("team/*", &[Action::Pull, Action::Push])],
        )
}

async fn basic() -> Running {
    start_with(|b: RegistryBuilder| b.auth(users(Auth::basic()))).await
}

async fn bearer() -> Running {
    start_with(|b: RegistryBuilder| b.auth(users(Auth::bearer()))).await
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn basic_challenges_then_admits_by_grant() {
    let reg = basic().await;
    for base in [reg.base.clone(), reg.base.replace("http://", "https://")] {
        let r = reg.client.get(format!("{base}/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{base}");
        assert_eq!(
            header(&r, "www-authenticate"),
            "Basic realm=\"shim-registry\""
        );
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
        let r = reg
            .client
            .get(format!("{base}/v2/"))
            .basic_auth("admin", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = reg
            .client
            .get(format!("{base}/v2/"))
            .basic_auth("admin", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // HEAD answers carry the challenge too.
    let r = reg
        .req(Method::HEAD, "/v2/x/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Basic "));

    // reader may pull anything and push nothing.
    let r = reg
        .req(Method::GET, "/v2/any/tags/list")
        .basic_auth("reader", Some("r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "allowed, but unknown");
    let r = reg
        .req(Method::POST, "/v2/any/blobs/uploads/")
        .basic_auth("reader", Some("r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    // team may push below team/ only.
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .basic_auth("team", Some("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::POST, "/v2/other/blobs/uploads/")
        .basic_auth("team", Some("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Nobody but admin deletes.
    let r = reg
        .req(Method::DELETE, "/v2/team/app/manifests/latest")
        .basic_auth("team", Some("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = reg
        .req(Method::DELETE, "/v2/team/app/manifests/latest")
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "allowed, but unknown");
}

/// Follows a Bearer challenge as a client does: parses realm, service and
/// scope, fetches a token with Basic credentials.
async fn token_for(reg: &Running, challenge: &str, user: &str, password: &str) -> Value {
    let params = challenge
        .strip_prefix("Bearer ")
        .expect("a bearer challenge");
    let field = |name: &str| {
        params
            .split("\",")
            .find_map(|p| p.strip_prefix(&format!("{name}=\"")))
            .map(|v| v.trim_end_matches('"').to_owned())
    };
    let realm = field("realm").expect("realm");
    let mut query = vec![("service", field("service").expect("service"))];
    if let Some(scope) = field("scope") {
        query.push(("scope", scope));
    }
    let r = reg
        .client
        .get(realm)
        .query(&query)
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body")
}

#[tokio::test]
async fn bearer_tokens_from_the_endpoint_carry_scopes() {
    let reg = bearer().await;
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}/token\",service=\"shim-registry\"",
            reg.base
        )
    );
    let login = token_for(&reg, &challenge, "team", "t").await;
    for key in ["token", "access_token", "expires_in", "issued_at"] {
        assert!(!login[key].is_null(), "{key} in {login}");
    }
    let r = reg
        .req(Method::GET, "/v2/")
        .bearer_auth(login["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A push to team/app: the challenge names the scope.
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.ends_with(",scope=\"repository:team/app:pull,push\""),
        "{challenge}"
    );
    let token = token_for(&reg, &challenge, "team", "t").await;
    assert_eq!(token["scope"], "repository:team/app:pull,push");
    let token = token["token"].as_str().unwrap().to_owned();
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The same token does not reach another repository.
    let r = reg
        .req(Method::GET, "/v2/team/other/tags/list")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("error=\"insufficient_scope\""));
    // team asking for other/x gets a token without it.
    let r = reg
        .client
        .get(format!("{}/token", reg.base))
        .query(&[
            ("service", "shim-registry"),
            ("scope", "repository:other/x:pull,push"),
        ])
        .basic_auth("team", Some("t"))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
    assert_eq!(v["scope"], "");
    // Bad credentials, no credentials and forged tokens are refused.
    let r = reg
        .client
        .get(format!("{}/token?scope=repository:team/app:pull", reg.base))
        .basic_auth("team", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .client
        .get(format!("{}/token", reg.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::GET, "/v2/")
        .bearer_auth("shim1.e30.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn bearer_password_grant_by_post_as_containerd_sends_it() {
    let reg = bearer().await;
    let r = reg
        .client
        .post(format!("{}/token", reg.base))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "s3cret"),
            ("service", "shim-registry"),
            ("scope", "repository:a/b:pull,push"),
            ("client_id", "containerd-client"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
    assert_eq!(v["scope"], "repository:a/b:pull,push");
    let r = reg
        .client
        .post(format!("{}/token", reg.base))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "not a refresh token");
    let r = reg
        .client
        .post(format!("{}/token", reg.base))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// Over TLS the realm is still plain HTTP on the same port: Docker's
/// containerd image store fetches tokens with Go's default client, which
/// refuses the self-signed certificate its registry requests accept.
#[tokio::test]
async fn bearer_realm_is_plain_http_also_over_tls() {
    let reg =
        start_with(|b: RegistryBuilder| b.auth(users(Auth::bearer())).tls(TlsConfig::SelfSigned))
            .await;
    let https = reg.base.replace("http://", "https://");
    let r = reg.client.get(format!("{https}/v2/")).send().await.unwrap();
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/token\"", reg.base)),
        "{challenge}"
    );
    // A client that verifies certificates, as the containerd store's token
    // client does, is refused the self-signed one but gets its token at the
    // realm.
    let verifying = reqwest::Client::new();
    let token_over = |base: &str| {
        verifying
            .get(format!("{base}/token?service=shim-registry"))
            .basic_auth("admin", Some("s3cret"))
            .send()
    };
    assert!(
        token_over(&https).await.is_err(),
        "the certificate is trusted"
    );
    assert_eq!(
        token_over(&reg.base).await.unwrap().status(),
        StatusCode::OK
    );
    let token = token_for(&reg, &challenge, "admin", "s3cret").await;
    let r = reg
        .client
        .get(format!("{https}/v2/"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// An oci-client over plain HTTP, or over TLS accepting the self-signed
/// certificate.
fn oci_client(tls: bool) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if tls {
            ClientProtocol::Https
        } else {
            ClientProtocol::Http
        },
        accept_invalid_certificates: tls,
        ..Default::default()
    })
}

/// Pushes a one-layer image with `auth` and pulls it back (over plain HTTP).
async fn oci_round_trip(reg: &Running, repo: &str, auth: &RegistryAuth) -> Result<(), String> {
    oci_round_trip_with(&oci_client(false), reg, repo, auth).await
}

async fn oci_round_trip_with(
    client: &Client,
    reg: &Running,
    repo: &str,
    auth: &RegistryAuth,
) -> Result<(), String> {
    let reference: Reference = format!("{}/{repo}:v1", reg.handle.addr()).parse().unwrap();
    let layers = vec![ImageLayer::oci_v1(b"layer data".to_vec(), None)];
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    client
        .push(&reference, &layers, config, auth, None)
        .await
        .map_err(|e| format!("push: {e}"))?;
    let pulled = client
        .pull(
            &reference,
            auth,
            vec![::oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
        )
        .await
        .map_err(|e| format!("pull: {e}"))?;
    assert_eq!(pulled.layers[0].data.as_ref(), b"layer data");
    Ok(())
}

#[tokio::test]
async fn oci_client_pushes_and_pulls_with_basic_and_bearer() {
    for reg in [basic().await, bearer().await] {
        let admin = RegistryAuth::Basic("admin".into(), "s3cret".into());
        oci_round_trip(&reg, "lib/app", &admin).await.unwrap();
        let team = RegistryAuth::Basic("team".into(), "t".into());
        oci_round_trip(&reg, "team/app", &team).await.unwrap();
        let refused = oci_round_trip(&reg, "lib/other", &team).await;
        assert!(refused.is_err(), "team pushed outside team/");
        let anonymous = oci_round_trip(&reg, "team/x", &RegistryAuth::Anonymous).await;
        assert!(anonymous.is_err(), "anonymous pushed");
        let wrong = RegistryAuth::Basic("admin".into(), "wrong".into());
        let refused = oci_round_trip(&reg, "lib/wrong", &wrong).await;
        assert!(refused.is_err(), "pushed with a wrong password");
    }
}

/// Over TLS the Bearer realm is plain HTTP; oci-client follows it.
#[tokio::test]
async fn oci_client_gets_tokens_over_tls() {
    let reg =
        start_with(|b: RegistryBuilder| b.auth(users(Auth::bearer())).tls(TlsConfig::SelfSigned))
            .await;
    let team = RegistryAuth::Basic("team".into(), "t".into());
    oci_round_trip_with(&oci_client(true), &reg, "team/tls", &team)
        .await
        .unwrap();
    let wrong = RegistryAuth::Basic("team".into(), "x".into());
    let refused = oci_round_trip_with(&oci_client(true), &reg, "team/tls2", &wrong).await;
    assert!(refused.is_err(), "pushed with a wrong password");
}
