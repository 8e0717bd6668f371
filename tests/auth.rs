//! Authentication, authorization and rate limits (`auth:`, `rate_limits:`) through every
//! frontend: gRPC (tonic and grpcurl), REST, WebSocket and SOAP calls against a backend that
//! counts what reaches it, so a refused call is seen never to arrive.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
    user_service_client::UserServiceClient,
};
use dragoman::policy::auth::api_key::hash_hex;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{HttpReply, TestGateway, http};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::Code;
use tonic_types::StatusExt;

/// A UserService that counts the calls reaching it and tells, in `display_name`, the metadata
/// the gateway gave it.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
}

const SHOWN: [&str; 5] = ["x-dragoman-identity", "x-user-id", "x-tenant", "authorization", "x-api-key"];

#[tonic::async_trait]
impl UserService for Counting {
    async fn get_user(&self, request: tonic::Request<GetUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let seen = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let display_name = SHOWN.iter().map(|h| format!("{h}={}", seen(h))).collect::<Vec<_>>().join(" ");
        Ok(tonic::Response::new(User { id: request.get_ref().id.clone(), display_name, ..Default::default() }))
    }
    async fn create_user(&self, _: tonic::Request<CreateUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::unimplemented("not here"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<ListUsersRequest>,
    ) -> Result<tonic::Response<ListUsersResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ListUsersResponse::default()))
    }
}

async fn start_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let backend = Counting::default();
    let calls = backend.calls.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(backend))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, calls)
}

/// A gateway in front of a counting UserService, with these top-level sections.
async fn gateway(sections: &str) -> (TestGateway, Arc<AtomicUsize>) {
    let (backend, calls) = start_counting().await;
    let gw = TestGateway::builder()
        .backend("shop.users.v1.UserService", &backend.to_string())
        .config(sections)
        .start()
        .await;
    (gw, calls)
}

/// GetUser by gRPC (tonic) with these metadata.
async fn grpc(gw: &TestGateway, headers: &[(&str, &str)]) -> Result<User, tonic::Status> {
    let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
    for (name, value) in headers {
        let name: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = name.parse().expect("name");
        request.metadata_mut().append(name, value.parse().expect("value"));
    }
    UserServiceClient::new(gw.channel().await).get_user(request).await.map(tonic::Response::into_inner)
}

/// GetUser by REST.
async fn rest(gw: &TestGateway, headers: &[(&str, &str)]) -> HttpReply {
    http(gw.address, "GET", "/v1/users/u-1", headers, b"").await
}

/// GetUser by WebSocket at the method's path: the handshake carries the headers; the call's
/// result (the User), or its status (`{"code", "message", "details"}`) when it failed.
async fn websocket(gw: &TestGateway, headers: &[(&str, &str)]) -> Value {
    websocket_at(gw, "/shop.users.v1.UserService/GetUser", headers).await
}

async fn websocket_at(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = format!("ws://{}{path}", gw.address).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the socket opens");
    ws.send(Message::text(r#"{"id":"u-1"}"#)).await.expect("send");
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no stall") {
        match frame.expect("a frame") {
            Message::Text(text) => frames.push(serde_json::from_str::<Value>(&text).expect("json")),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let found = frames.iter().find_map(|f| f.get("result").or_else(|| f.get("status")));
    found.cloned().unwrap_or_else(|| panic!("no result nor status in {frames:?}"))
}

/// GetUser by SOAP 1.1.
async fn soap(gw: &TestGateway, headers: &[(&str, &str)]) -> HttpReply {
    let envelope = "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
        <GetUser xmlns=\"urn:dragoman:shop.users.v1\"><id>u-1</id></GetUser></soap:Body></soap:Envelope>";
    let mut all = vec![("content-type", "text/xml; charset=utf-8"), ("soapaction", "GetUser")];
    all.extend_from_slice(headers);
    http(gw.address, "POST", "/soap/shop.users.v1.UserService", &all, envelope.as_bytes()).await
}

fn api_keys_config() -> String {
    format!(
        "auth:
  api_keys:
    query_parameter: api_key
    keys:
      - {{name: billing, sha256: {}, scopes: [users.read]}}
      - {{name: intern, sha256: {}}}
  rules:
    - match: shop.users.v1.UserService/GetUser
      scopes: [users.read]
    - match: grpc.reflection.*
    - match: grpc.health.v1.Health
      anonymous: true
",
        hash_hex("key-billing"),
        hash_hex("key-intern")
    )
}

#[tokio::test]
async fn every_frontend_refuses_what_the_rules_refuse_and_the_backend_never_sees_it() {
    let (gw, calls) = gateway(&api_keys_config()).await;
    let billing = [("x-api-key", "key-billing")];
    let intern = [("x-api-key", "key-intern")];
    let stranger = [("x-api-key", "key-unknown")];
    let forged = [("x-dragoman-identity", "root")];

    // gRPC: UNAUTHENTICATED without a key or with an unknown one, PERMISSION_DENIED without the
    // scope; the message names the rule and what is missing, never the key.
    let status = grpc(&gw, &[]).await.expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("rule `shop.users.v1.UserService/GetUser`"), "{}", status.message());
    assert!(status.message().contains("an API key in x-api-key"), "{}", status.message());
    let status = grpc(&gw, &forged).await.expect_err("a forged identity is no credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = grpc(&gw, &stranger).await.expect_err("unknown key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("key-unknown"), "{}", status.message());
    let status = grpc(&gw, &intern).await.expect_err("no scope");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("requires the scope \"users.read\", which \"intern\" lacks"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("PERMISSION_DENIED", "dragoman"));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no refused call reached the backend");
    let user = grpc(&gw, &[billing[0], forged[0]]).await.expect("billing may");
    assert!(user.display_name.contains("x-dragoman-identity=billing"), "{}", user.display_name);
    assert!(user.display_name.contains("x-api-key=-"), "the key is not passed on: {}", user.display_name);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // REST: 401 with a challenge naming the header, 403, 200.
    let reply = rest(&gw, &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.header("www-authenticate"), Some("ApiKey realm=\"dragoman\", header=\"x-api-key\""));
    assert_eq!(reply.json()["code"], 16);
    assert_eq!(rest(&gw, &stranger).await.status, 401);
    let reply = rest(&gw, &intern).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("users.read"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let reply = rest(&gw, &[billing[0], forged[0]]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["displayName"].as_str().unwrap_or_default().contains("x-dragoman-identity=billing"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // WebSocket: the call's status says why.
    let reply = websocket(&gw, &[]).await;
    assert_eq!(reply["code"], 16, "{reply}");
    let reply = websocket(&gw, &intern).await;
    assert_eq!(reply["code"], 7, "{reply}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let reply = websocket(&gw, &billing).await;
    assert!(reply["displayName"].as_str().unwrap_or_default().contains("x-dragoman-identity=billing"), "{reply}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The metadata a browser puts in the URL cannot name the caller either.
    let reply =
        websocket_at(&gw, "/shop.users.v1.UserService/GetUser?metadata.x-dragoman-identity=root", &billing).await;
    assert!(reply["displayName"].as_str().unwrap_or_default().contains("x-dragoman-identity=billing"), "{reply}");
    let reply = websocket_at(&gw, "/shop.users.v1.UserService/GetUser?metadata.x-dragoman-identity=root", &[]).await;
    assert_eq!(reply["code"], 16, "{reply}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // SOAP: a fault with the gRPC code, and the challenge header.
    let reply = soap(&gw, &[]).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("<grpc:name>UNAUTHENTICATED</grpc:name>"), "{}", reply.text());
    assert!(reply.header("www-authenticate").is_some());
    let reply = soap(&gw, &intern).await;
    assert!(reply.text().contains("<grpc:name>PERMISSION_DENIED</grpc:name>"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let reply = soap(&gw, &billing).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("x-dragoman-identity=billing"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // The key in the URL, for clients that cannot set a header: REST does not bind it as a field.
    let reply = http(gw.address, "GET", "/v1/users/u-1?api_key=key-billing", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("x-dragoman-identity=billing"), "{}", reply.text());
    let reply = http(gw.address, "GET", "/v1/users/u-1?api_key=key-intern", &[], b"").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // A method of the same service that no rule names is denied, even to billing.
    let reply = http(gw.address, "GET", "/v1/users", &billing, b"").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("no rule allows shop.users.v1.UserService/ListUsers"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // The refusals are counted per reason.
    let metrics = gw.gateway.metrics().render(false);
    let counted = |reason: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("dragoman_refusals_total") && l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(counted("unauthenticated"), 8, "{metrics}");
    assert_eq!(counted("permission_denied"), 6, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_can_be_put_behind_a_key_and_health_left_open() {
    let (gw, _) = gateway(&api_keys_config()).await;
    let output = gw.grpcurl(&["list"]);
    assert!(!output.status.success());
    assert!(support::stderr(&output).contains("Unauthenticated"), "{}", support::stderr(&output));
    let output = gw.grpcurl(&["-H", "x-api-key: key-intern", "list"]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    assert!(support::stdout(&output).contains("shop.users.v1.UserService"));
    // Health needs no key (grpcurl would need reflection to call it: a bare HTTP/2 client).
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let reply = support::raw_unary(gw.address, "/grpc.health.v1.Health/Check", &request, &[]).await;
    assert_eq!(reply.status(), Some(0));
}

#[tokio::test]
async fn a_burst_is_allowed_exactly_then_every_protocol_is_told_when_to_come_back() {
    let config = "rate_limits:
  limits:
    - {name: per-ip, match: shop.users.v1.UserService/GetUser, key: client_ip, limit: 4, per: 1m}
";
    let (gw, calls) = gateway(config).await;
    // One quota for every protocol and worker: four calls, one by each frontend.
    let reply = rest(&gw, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("ratelimit-policy"), Some("\"per-ip\";q=4;w=60"));
    assert_eq!(reply.header("ratelimit"), Some("\"per-ip\";r=3;t=15"));
    let second =
        UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await.expect("second");
    let fields = second.metadata().get("ratelimit").and_then(|v| v.to_str().ok());
    assert_eq!(fields, Some("\"per-ip\";r=2;t=30"), "gRPC clients get the fields as metadata");
    assert!(websocket(&gw, &[]).await.get("displayName").is_some(), "third");
    assert_eq!(soap(&gw, &[]).await.status, 200, "fourth");
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let reply = rest(&gw, &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    let retry_after: u64 = reply.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((14..=15).contains(&retry_after), "one call comes back every 15 s: {retry_after}");
    assert_eq!(reply.header("ratelimit"), Some("\"per-ip\";r=0;t=60"));
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("rate limit \"per-ip\" reached"));
    let status = grpc(&gw, &[]).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry > Duration::from_secs(13) && retry <= Duration::from_secs(15), "{retry:?}");
    assert_eq!(websocket(&gw, &[]).await["code"], 8);
    let reply = soap(&gw, &[]).await;
    assert!(reply.text().contains("RESOURCE_EXHAUSTED"), "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 4, "no call over the limit reached the backend");
    // Another method is not covered by the limit.
    assert_eq!(http(gw.address, "GET", "/v1/users", &[], b"").await.status, 200);
}

#[tokio::test]
async fn a_spent_quota_recovers_after_its_period() {
    let config = "rate_limits:
  limits:
    - {name: fast, key: global, limit: 2, per: 2s}
";
    let (gw, _) = gateway(config).await;
    assert_eq!(rest(&gw, &[]).await.status, 200);
    assert_eq!(rest(&gw, &[]).await.status, 200);
    let reply = rest(&gw, &[]).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(rest(&gw, &[]).await.status, 200, "one call back every second");
    assert_eq!(rest(&gw, &[]).await.status, 429);
}

#[tokio::test]
async fn limits_per_identity_and_per_header_compose() {
    let config = format!(
        "{}rate_limits:
  limits:
    - {{name: per-caller, key: identity, limit: 2, per: 1m}}
    - {{name: per-tenant, key: 'header:x-tenant', limit: 3, per: 1m}}
",
        api_keys_config()
    );
    let (gw, calls) = gateway(&config).await;
    let gw = &gw;
    let billing = |tenant: &'static str| [("x-api-key", "key-billing"), ("grpc-metadata-x-tenant", tenant)];
    let reply = rest(gw, &billing("a")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("ratelimit-policy"), Some("\"per-caller\";q=2;w=60, \"per-tenant\";q=3;w=60"));
    assert_eq!(rest(gw, &billing("b")).await.status, 200);
    let reply = rest(gw, &billing("c")).await;
    assert_eq!(reply.status, 429, "billing's own quota is spent");
    assert!(reply.text().contains("per-caller"), "{}", reply.text());
    // Refused by auth: counted by no limit (see tenant b's call below).
    assert_eq!(rest(gw, &[("x-api-key", "nope")]).await.status, 401);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let health = |headers: &'static [(&'static str, &'static str)]| {
        let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
        async move { support::raw_unary(gw.address, "/grpc.health.v1.Health/Check", &request, headers).await }
    };
    let intern = &[("x-api-key", "key-intern"), ("x-tenant", "a")];
    assert_eq!(health(intern).await.status(), Some(0), "tenant a's second call");
    assert_eq!(health(intern).await.status(), Some(0), "tenant a's third call");
    let fourth = health(&[("x-tenant", "a")]).await;
    assert_eq!(fourth.status(), Some(8), "tenant a's fourth call is over its quota, whoever makes it");
    let message = fourth.trailers.as_ref().unwrap_or(&fourth.headers).get("grpc-message").cloned();
    assert!(format!("{message:?}").contains("per-tenant"), "{message:?}");
    // Tenant b has its own quota. Anonymous callers share their address's per-caller quota of 2:
    // the fourth call above used one (a call one limit refuses may have counted under another),
    // this one the other — the refused API key above counted under none.
    let tenant_b = health(&[("x-tenant", "b")]).await;
    assert_eq!(tenant_b.status(), Some(0), "tenant b has its own quota");
    let fields = tenant_b.headers.get("ratelimit").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(fields.starts_with("\"per-caller\";r=0;"), "{fields}");
}

/// An identity provider: a JWKS at `/jwks`, served over HTTP/1.1 from what `keys` holds now,
/// counting the fetches.
struct Provider {
    address: SocketAddr,
    keys: Arc<std::sync::Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(jwks: String) -> Provider {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let keys = Arc::new(std::sync::Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().expect("keys").clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                });
            }
        });
        Provider { address, keys, fetches }
    }
}

/// An ES256 key of the provider's: signs tokens, and its public half as a JWK.
struct Signer {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        });
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
        Signer { kid: kid.to_owned(), encoding, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn jwks(signers: &[&Signer]) -> String {
    serde_json::json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// `alg: none` is no algorithm any configured key allows.
const NONE_REFUSED: &str = "the token's algorithm is not allowed for its key";
const TAMPERED_REFUSED: &str = "the token's signature is invalid";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn claims(overrides: Value) -> Value {
    let mut claims = serde_json::json!({
        "iss": "https://idp.test", "aud": "dragoman", "sub": "ada", "tenant": "acme",
        "scope": "users.read profile", "iat": now(), "exp": now() + 300,
    });
    for (key, value) in overrides.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_verified_against_the_providers_keys_and_their_claims_reach_the_backend() {
    let first = Signer::new("key-1");
    let provider = Provider::start(jwks(&[&first])).await;
    let config = format!(
        "auth:
  jwt:
    - issuer: https://idp.test
      audiences: [dragoman]
      jwks_url: http://{}/jwks
      min_refetch_interval: 2s
  claims_metadata: {{sub: x-user-id, tenant: x-tenant}}
  rules:
    - match: shop.users.v1.UserService/GetUser
      scopes: [users.read]
",
        provider.address
    );
    let (gw, calls) = gateway(&config).await;
    let bearer = |token: &str| format!("Bearer {token}");

    // A valid token: the identity and chosen claims reach the backend; the token and a forged
    // claim header do not.
    let token = first.sign(&claims(serde_json::json!({})));
    let auth = bearer(&token);
    let reply = rest(&gw, &[("authorization", &auth), ("grpc-metadata-x-user-id", "mallory")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["displayName"].as_str().unwrap_or_default().to_owned();
    for expected in ["x-dragoman-identity=ada", "x-user-id=ada", "x-tenant=acme", "authorization=-"] {
        assert!(seen.contains(expected), "{expected} in {seen}");
    }
    // A claim the token lacks is not told, whatever the client writes in its place.
    let tenantless = bearer(&first.sign(&claims(serde_json::json!({"tenant": null}))));
    let reply = rest(&gw, &[("authorization", &tenantless), ("grpc-metadata-x-tenant", "evil")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("x-tenant=-"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Another scheme in authorization is no bearer token: refused, not passed through.
    let reply = rest(&gw, &[("authorization", "Basic YWRhOnNlY3JldA==")]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.text().contains("expected `Bearer <token>`"), "{}", reply.text());
    let user = grpc(&gw, &[("authorization", &auth)]).await.expect("gRPC with the same token");
    assert!(user.display_name.contains("x-user-id=ada"), "{}", user.display_name);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1, "the keys are fetched once");

    // Each bad token: 401, RFC 6750's invalid_token challenge saying why; the backend sees none.
    let other = Signer::new("key-1"); // the same kid, another key: a forged signature
    let none = {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "kid": "key-1"})), b64(&claims(serde_json::json!({}))))
    };
    // The signed token with another payload (sub: root) under the same signature.
    let tampered = {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(claims(serde_json::json!({"sub": "root"})).to_string());
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let cases = [
        (first.sign(&claims(serde_json::json!({"exp": now() - 3600}))), "the token has expired"),
        (first.sign(&claims(serde_json::json!({"nbf": now() + 3600}))), "the token is not valid yet"),
        (first.sign(&claims(serde_json::json!({"aud": "someone-else"}))), "the token's audience is not accepted"),
        (first.sign(&claims(serde_json::json!({"iss": "https://evil.test"}))), "issuer"),
        (other.sign(&claims(serde_json::json!({}))), "the token's signature is invalid"),
        (none, NONE_REFUSED),
        (tampered, TAMPERED_REFUSED),
        (first.sign(&claims(serde_json::json!({"sub": null}))), "the token names no subject (sub)"),
    ];
    for (token, why) in &cases {
        let reply = rest(&gw, &[("authorization", &bearer(token))]).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.text());
        let challenge = reply.header("www-authenticate").unwrap_or_default().to_owned();
        assert!(challenge.starts_with("Bearer realm=\"dragoman\", error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains(why) && reply.text().contains(why), "{why}: {challenge} {}", reply.text());
    }
    let status = grpc(&gw, &[("authorization", &bearer(&cases[0].0))]).await.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    let reply = rest(&gw, &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"dragoman\""));
    let scopeless = first.sign(&claims(serde_json::json!({"scope": "profile"})));
    assert_eq!(rest(&gw, &[("authorization", &bearer(&scopeless))]).await.status, 403);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no refused call reached the backend");

    // The provider rotates to a new key: once min_refetch_interval has passed since the last
    // fetch, a token with the new kid makes one re-fetch and verifies.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = Signer::new("key-2");
    *provider.keys.lock().expect("keys") = jwks(&[&first, &second]);
    let rotated = second.sign(&claims(serde_json::json!({"sub": "grace"})));
    let reply = rest(&gw, &[("authorization", &bearer(&rotated))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("x-dragoman-identity=grace"), "{}", reply.text());
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);

    // Fifty tokens with random kids at once, once min_refetch_interval has passed again: one
    // fetch between them all.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let flood = (0..50).map(|i| {
        let signer = Signer::new(&format!("random-{i}"));
        let token = bearer(&signer.sign(&claims(serde_json::json!({}))));
        let gw = &gw;
        async move { rest(gw, &[("authorization", &token)]).await.status }
    });
    let statuses = futures_util::future::join_all(flood).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 3, "random kids do not flood the provider");
}

fn shared_limit(redis: &support::redis::Redis, on_error: &str) -> String {
    format!(
        "rate_limits:
  redis: {{url: '{}', timeout: 200ms, on_error: {on_error}}}
  limits:
    - {{name: shared, match: shop.users.v1.UserService, key: global, limit: 5, per: 1m, shared: true}}
",
        redis.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_admit_the_limit_once_not_twice() {
    let redis = support::redis::Redis::start();
    let (one, one_calls) = gateway(&shared_limit(&redis, "open")).await;
    let (two, two_calls) = gateway(&shared_limit(&redis, "open")).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &one } else { &two };
        statuses.push(rest(gw, &[]).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");
    assert_eq!(one_calls.load(Ordering::SeqCst) + two_calls.load(Ordering::SeqCst), 5);
    let reply = rest(&two, &[]).await;
    assert_eq!(reply.header("ratelimit-policy"), Some("\"shared\";q=5;w=60"));
    let retry_after: u64 = reply.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_gone_a_shared_limit_fails_open_or_closed_as_configured_and_never_hangs() {
    let mut redis = support::redis::Redis::start();
    let (open, open_calls) = gateway(&shared_limit(&redis, "open")).await;
    let (closed, closed_calls) = gateway(&shared_limit(&redis, "closed")).await;
    assert_eq!(rest(&open, &[]).await.status, 200);
    assert_eq!(rest(&closed, &[]).await.status, 200);
    redis.kill();
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let reply = rest(&open, &[]).await;
        assert_eq!(reply.status, 200, "fails open: {}", reply.text());
        assert_eq!(reply.header("ratelimit"), None, "nothing was counted");
        let reply = rest(&closed, &[]).await;
        assert_eq!(reply.status, 503, "fails closed: {}", reply.text());
        assert!(reply.text().contains("rate limit \\\"shared\\\" cannot be checked right now"), "{}", reply.text());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no call waited long: {:?}", started.elapsed());
    assert_eq!(open_calls.load(Ordering::SeqCst), 11);
    assert_eq!(closed_calls.load(Ordering::SeqCst), 1);
    // Counted for /metrics (only this test makes Redis fail in this binary).
    let mut metrics = String::new();
    dragoman::policy::limit::render_store_errors(&mut metrics, false);
    assert!(metrics.contains("dragoman_rate_limit_store_errors_total{on_error=\"open\"} 10\n"), "{metrics}");
    assert!(metrics.contains("dragoman_rate_limit_store_errors_total{on_error=\"closed\"} 10\n"), "{metrics}");
    // Redis back: the limit counts again (the back-off after a failure lasts about a second).
    redis.restart();
    let mut counted = None;
    for _ in 0..100 {
        let reply = rest(&closed, &[]).await;
        if reply.status == 200 {
            counted = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counted = counted.expect("served again within 5 s of Redis's return");
    assert_eq!(counted.header("ratelimit"), Some("\"shared\";r=4;t=12"), "counted in the new, empty Redis");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_limits_change_on_a_config_reload_and_an_unchanged_limit_keeps_its_counts() {
    let (backend, calls) = start_counting().await;
    let sections = |key: &str, extra_limit: &str| {
        format!(
            "auth:
  api_keys:
    keys: [{{name: holder, sha256: {}, scopes: [users.read]}}]
  rules: [{{match: shop.users.v1.UserService, scopes: [users.read]}}]
rate_limits:
  limits:
    - {{name: per-ip, match: shop.users.v1.UserService/GetUser, key: client_ip, limit: 3, per: 1m}}
{extra_limit}",
            hash_hex(key)
        )
    };
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [http://{backend}]\n"))
        .config(&sections("key-old", ""))
        .start()
        .await;
    assert_eq!(rest(&gw, &[("x-api-key", "key-old")]).await.status, 200);
    assert_eq!(rest(&gw, &[("x-api-key", "key-old")]).await.header("ratelimit"), Some("\"per-ip\";r=1;t=40"));

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gateway.yaml");
    let extra = "    - {name: per-method, key: method, limit: 100, per: 1s}\n";
    let yaml = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [http://{backend}]\n{}",
        gw.descriptors.display(),
        sections("key-new", extra)
    );
    std::fs::write(&path, yaml).expect("write");
    assert!(gw.gateway.reload_config(&path, false).expect("reloads"), "the config changed");

    let reply = rest(&gw, &[("x-api-key", "key-old")]).await;
    assert_eq!(reply.status, 401, "the old key is gone: {}", reply.text());
    let reply = rest(&gw, &[("x-api-key", "key-new")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("ratelimit"),
        Some("\"per-ip\";r=0;t=60, \"per-method\";r=99;t=1"),
        "per-ip kept its count across the reload; per-method is new"
    );
    assert_eq!(rest(&gw, &[("x-api-key", "key-new")]).await.status, 429);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_frontend_lets_a_client_name_itself() {
    // GetUser open to anonymous callers: what reaches the backend is what the client sent, but
    // never the identity or claim metadata, whichever way it is written.
    let config = format!(
        "{}  claims_metadata: {{tenant: x-tenant}}\n",
        api_keys_config().replace(
            "    - match: shop.users.v1.UserService/GetUser\n      scopes: [users.read]\n",
            "    - match: shop.users.v1.UserService/GetUser\n      anonymous: true\n"
        )
    );
    let (gw, calls) = gateway(&config).await;
    let forged = [("x-dragoman-identity", "root"), ("x-tenant", "evil")];
    let user = grpc(&gw, &forged).await.expect("anonymous GetUser");
    assert!(user.display_name.contains("x-dragoman-identity=- x-user-id=- x-tenant=-"), "{}", user.display_name);
    let prefixed = [("grpc-metadata-x-dragoman-identity", "root"), ("grpc-metadata-x-tenant", "evil")];
    let reply = rest(&gw, &prefixed).await;
    assert!(reply.text().contains("x-dragoman-identity=- x-user-id=- x-tenant=-"), "{}", reply.text());
    let path = "/shop.users.v1.UserService/GetUser?metadata.x-dragoman-identity=root&metadata.x-tenant=evil";
    let reply = websocket_at(&gw, path, &[]).await;
    assert!(
        reply["displayName"].as_str().unwrap_or_default().contains("x-dragoman-identity=- x-user-id=- x-tenant=-"),
        "{reply}"
    );
    let reply = soap(&gw, &prefixed).await;
    assert!(reply.text().contains("x-dragoman-identity=- x-user-id=- x-tenant=-"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // With a key, the backend is told the key's holder instead.
    let user = grpc(&gw, &[("x-api-key", "key-intern"), forged[0]]).await.expect("intern");
    assert!(user.display_name.contains("x-dragoman-identity=intern"), "{}", user.display_name);
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let dir = tempfile::tempdir().expect("tmp");
    let secret = "a-shared-secret-of-at-least-thirty-two-bytes";
    std::fs::write(dir.path().join("secret"), secret).expect("write");
    let config = format!(
        "auth:
  jwt:
    - {{issuer: https://idp.test, audiences: [dragoman], secret_file: {}, algorithm: HS256, leeway: 0s}}
  rules: [{{match: shop.users.v1.UserService/GetUser}}]
",
        dir.path().join("secret").display()
    );
    let (gw, calls) = gateway(&config).await;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let expiring = claims(serde_json::json!({"exp": now() + 2}));
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &expiring, &key)
        .expect("sign");
    let auth = format!("Bearer {token}");
    assert_eq!(rest(&gw, &[("authorization", &auth)]).await.status, 200);
    assert_eq!(rest(&gw, &[("authorization", &auth)]).await.status, 200, "answered from the cache");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let reply = rest(&gw, &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.text().contains("the token has expired"), "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_limit_keyed_by_a_credential_is_refused_at_load() {
    let yaml = format!(
        "services: []\n{}rate_limits:\n  limits: [{{name: by-key, key: 'header:x-api-key', limit: 1, per: 1s}}]\n",
        api_keys_config()
    );
    let error = dragoman::config::Config::parse(&yaml, std::path::Path::new(".")).expect_err("refused");
    assert!(error.contains("limit \"by-key\" is keyed by x-api-key"), "{error}");
}
