//! TLS backends (`https://`): the gateway dials with rustls, ALPN h2, verifying the backend's
//! certificate against the configured CA — and refuses a backend it cannot verify.

mod support;

use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backend_with_configured_ca() {
    let (port, pem) = support::start_tls_backend(tonic::service::Routes::new(UserServiceServer::new(Secure))).await;
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
    let (port, _pem) = support::start_tls_backend(tonic::service::Routes::new(UserServiceServer::new(Secure))).await;
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
