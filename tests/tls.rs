//! TLS backends (`https://`): the gateway dials with rustls, ALPN h2, verifying the backend's
//! certificate against the configured CA — and refuses a backend it cannot verify.

mod support;

use std::sync::Arc;

use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use support::{TestGateway, USERS};
use tonic::{Code, Request, Response, Status};

struct Secure;

#[tonic::async_trait]
impl UserService for Secure {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(User { id: request.into_inner().id, display_name: "over TLS".into(), ..Default::default() }))
    }
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("read-only"))
    }
    async fn list_users(&self, _: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("read-only"))
    }
}

/// A TLS gRPC backend with a fresh self-signed certificate for "localhost"; returns its port and
/// the certificate's PEM.
async fn start_tls_backend() -> (u16, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_pem = key.cert.pem();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let routes = tonic::service::Routes::new(UserServiceServer::new(Secure));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(routes))
                    .await;
            });
        }
    });
    (port, cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backend_with_configured_ca() {
    let (port, pem) = start_tls_backend().await;
    let ca = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca.path(), pem).expect("write ca");
    let gw = TestGateway::builder()
        .sets(vec![("users.binpb", support::demo_set(&[USERS]))])
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [https://localhost:{port}]\n    tls: {{ ca_file: {} }}\n",
            ca.path().display()
        ))
        .start()
        .await;
    let user = UserServiceClient::new(gw.channel().await)
        .get_user(GetUserRequest { id: "u-9".into() })
        .await
        .expect("over TLS");
    assert_eq!(user.into_inner().display_name, "over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_tls_backend_is_unavailable() {
    let logs = support::logs();
    let (port, _pem) = start_tls_backend().await;
    // The system roots do not trust a fresh self-signed certificate.
    let gw = TestGateway::builder()
        .sets(vec![("users.binpb", support::demo_set(&[USERS]))])
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [https://localhost:{port}]\n"))
        .start()
        .await;
    let err = UserServiceClient::new(gw.channel().await)
        .get_user(GetUserRequest { id: "u-9".into() })
        .await
        .expect_err("certificate not trusted");
    assert_eq!(err.code(), Code::Unavailable);
    // The client learns which service, not where its backend lives nor what went wrong inside...
    assert!(err.message().contains("shop.users.v1.UserService is unavailable"), "{}", err.message());
    for secret in [port.to_string().as_str(), "localhost", "TLS", "certificate"] {
        assert!(!err.message().contains(secret), "{secret} leaked: {}", err.message());
    }
    // ...the log does.
    let text = logs.text();
    let line = text.lines().find(|l| l.contains(&format!("localhost:{port}"))).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("TLS handshake failed"), "{line}");
}
