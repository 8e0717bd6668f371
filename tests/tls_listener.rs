//! The TLS listener (`tls:`): the real `dragoman serve` binary with certificates made for the
//! test, called by grpcurl, curl, a tonic client and a WebSocket client over TLS on one port;
//! mutual TLS and the identity the backend is told; certificates swapped on disk.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use support::{Running, root, stderr, stdout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A certificate authority made for the test.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Authority { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `common_name` with these subject alternative names: its PEM, its key's
    /// PEM, its DER.
    fn issue(&self, common_name: &str, names: Vec<SanType>) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = names;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// The gateway's certificate: localhost and 127.0.0.1.
    fn server(&self) -> (String, String) {
        let names =
            vec![SanType::DnsName("localhost".try_into().expect("name")), SanType::IpAddress([127, 0, 0, 1].into())];
        let (cert, key, _) = self.issue("dragoman test", names);
        (cert, key)
    }
}

/// A CA and the gateway's certificate by it, written where `serve` reads them (`server.pem`,
/// `server.key`); the CA's certificate in `ca.pem`, for clients.
fn gateway_certificate(dir: &Path, name: &str) -> (Authority, PathBuf) {
    let authority = Authority::new(name);
    let (cert, key) = authority.server();
    std::fs::write(dir.join("server.pem"), cert).expect("write");
    std::fs::write(dir.join("server.key"), key).expect("write");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, authority.pem()).expect("write");
    (authority, ca)
}

/// A client CA in `clients.pem` (for `tls.client_ca_file`), a client it trusts ("billing") and
/// one by another CA ("stranger").
fn client_certificates(dir: &Path) -> (ClientCert, ClientCert) {
    let clients = Authority::new("clients CA");
    std::fs::write(dir.join("clients.pem"), clients.pem()).expect("write");
    let billing = client_cert(&clients, dir, "billing");
    (billing, client_cert(&Authority::new("someone else's CA"), dir, "stranger"))
}

/// A client certificate: its files, and its DER.
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

fn client_cert(authority: &Authority, dir: &Path, name: &str) -> ClientCert {
    let names = vec![
        SanType::DnsName(format!("{name}.internal").try_into().expect("name")),
        SanType::URI(format!("spiffe://example.org/{name}").try_into().expect("uri")),
    ];
    let (cert_pem, key_pem, der) = authority.issue(name, names);
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, cert_pem).expect("write");
    std::fs::write(&key, key_pem).expect("write");
    ClientCert { cert, key, der }
}

/// Writes a file whole at once (a rename), as a deploy tool swaps a certificate.
fn replace(path: &Path, contents: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, contents).expect("write");
    std::fs::rename(&staged, path).expect("rename");
}

/// `dragoman serve` with a plain and a TLS listener in front of the echo backend; returns the
/// process and the TLS listener's address.
async fn serve(dir: &Path, tls_extra: &str) -> (Running, std::net::SocketAddr) {
    let echo = support::start_echo().await;
    let config = dir.join("gateway.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\ntls:\n  listen: 127.0.0.1:0\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}services:\n  - match: shop.users.v1.UserService\n    backends: [http://{echo}]\n",
        root().join("descriptors").display()
    );
    std::fs::write(&config, yaml).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config"]).arg(&config);
    let running = tokio::task::spawn_blocking(move || Running::start(command)).await.expect("join");
    let tls = tls_address(&running).await;
    (running, tls)
}

/// The TLS listener's address, from its "dragoman listening … tls=true" line (logged right after
/// the plain listener's, which `Running` waited for).
async fn tls_address(running: &Running) -> std::net::SocketAddr {
    let line = running.wait_for_log(|l| l.contains("dragoman listening") && l.contains("tls=true")).await;
    let address = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address");
    address.parse().expect("address")
}

fn grpcurl(tls: std::net::SocketAddr, ca: &Path, flags: &[&str], rest: &[&str]) -> Output {
    Command::new(support::grpcurl())
        .arg("-cacert")
        .arg(ca)
        .args(flags)
        .arg(format!("localhost:{}", tls.port()))
        .args(rest)
        .output()
        .expect("grpcurl runs")
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs")
}

/// A tonic channel to the TLS listener, trusting `ca`, presenting `identity` if given.
async fn tonic_channel(
    tls: std::net::SocketAddr,
    ca: &str,
    identity: Option<tonic::transport::Identity>,
) -> tonic::transport::Channel {
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        config = config.identity(identity);
    }
    tonic::transport::Channel::from_shared(format!("https://localhost:{}", tls.port()))
        .expect("uri")
        .tls_config(config)
        .expect("tls")
        .connect()
        .await
        .expect("connects")
}

/// A rustls client trusting `ca`, presenting `client` if given.
fn tls_client(ca: &str, client: Option<&ClientCert>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = CertificateDer::pem_file_iter(&client.cert).expect("read").map(|c| c.expect("cert")).collect();
            let key = PrivateKeyDer::from_pem_file(&client.key).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client auth")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_is_served_over_tls_on_one_port() {
    let dir = tempfile::tempdir().expect("tmp");
    let (authority, ca) = gateway_certificate(dir.path(), "test CA");
    let (_gateway, tls) = serve(dir.path(), "").await;
    let ca_arg = ca.to_str().expect("utf-8 path");

    // grpcurl: reflection and a call, over TLS with ALPN h2.
    let out = grpcurl(tls, &ca, &[], &["list"]);
    assert!(stdout(&out).contains("shop.users.v1.UserService"), "{}", stderr(&out));
    let out = grpcurl(tls, &ca, &["-d", r#"{"id":"u-1"}"#], &["shop.users.v1.UserService/GetUser"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""id": "u-1""#), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("x-forwarded-client-cert=-"),
        "no client certificate, none forwarded: {}",
        stdout(&out)
    );

    // curl: REST over HTTP/1.1 and HTTP/2 (ALPN picks), and SOAP.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let url = format!("https://localhost:{}/v1/users/u-2", tls.port());
        let out = curl(&["--cacert", ca_arg, flag, "-w", "\n%{http_version} %{http_code}", &url]);
        let text = stdout(&out);
        assert!(text.ends_with(&format!("\n{version} 200")), "{text} {}", stderr(&out));
        assert!(text.contains(r#""id":"u-2""#), "{text}");
    }
    let envelope = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetUser xmlns="urn:dragoman:shop.users.v1"><id>u-3</id></GetUser></s:Body></s:Envelope>"#;
    let url = format!("https://localhost:{}/soap/shop.users.v1.UserService", tls.port());
    let out = curl(&[
        "--cacert",
        ca_arg,
        "-H",
        "content-type: text/xml; charset=utf-8",
        "-H",
        "soapaction: GetUser",
        "--data-binary",
        envelope,
        &url,
    ]);
    assert!(stdout(&out).contains("<id>u-3</id>"), "{} {}", stdout(&out), stderr(&out));

    // A tonic client.
    let ca_pem = authority.pem();
    let user = UserServiceClient::new(tonic_channel(tls, &ca_pem, None).await)
        .get_user(GetUserRequest { id: "u-4".into() })
        .await
        .expect("the call succeeds")
        .into_inner();
    assert_eq!(user.id, "u-4");

    // A WebSocket (wss://, HTTP/1.1 upgrade).
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tls_client(&ca_pem, None, &[b"http/1.1"]).connect(name, tcp).await.expect("handshake");
    let request = format!("wss://localhost:{}/v1/users/u-5", tls.port()).into_client_request().expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("the socket opens");
    ws.send(Message::text("{}")).await.expect("send");
    let mut replies = String::new();
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) => replies.push_str(&text),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(replies.contains(r#""id":"u-5""#), "{replies}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_tells_the_backend_who_the_client_is_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tmp");
    let (authority, ca) = gateway_certificate(dir.path(), "server CA");
    let (billing, stranger) = client_certificates(dir.path());
    let (_gateway, tls) = serve(dir.path(), "  client_ca_file: clients.pem\n").await;

    // A trusted client: the backend is told who it is, and a forged header is replaced.
    let digest = ring::digest::digest(&ring::digest::SHA256, &billing.der);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let (cert, key) = (billing.cert.to_str().expect("path"), billing.key.to_str().expect("path"));
    let flags = ["-cert", cert, "-key", key, "-H", "x-forwarded-client-cert: Hash=forged", "-d", r#"{"id":"u-1"}"#];
    let out = grpcurl(tls, &ca, &flags, &["shop.users.v1.UserService/GetUser"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = format!(
        "x-forwarded-client-cert=Hash={hash};Subject=\\\"CN=billing\\\";URI=spiffe://example.org/billing;DNS=billing.internal"
    );
    assert!(stdout(&out).contains(&expected), "expected {expected} in {}", stdout(&out));
    let url = format!("https://localhost:{}/v1/users/u-2", tls.port());
    let ca_arg = ca.to_str().expect("path");
    let out = curl(&["--cacert", ca_arg, "--cert", cert, "--key", key, &url]);
    assert!(stdout(&out).contains(&format!("x-forwarded-client-cert=Hash={hash};")), "{}", stdout(&out));

    // No certificate, or one from a CA the gateway does not trust: refused in the handshake.
    let out = grpcurl(tls, &ca, &["-d", r#"{"id":"u-1"}"#], &["shop.users.v1.UserService/GetUser"]);
    assert!(!out.status.success(), "a client without a certificate got in: {}", stdout(&out));
    let out = curl(&["--cacert", ca_arg, &url]);
    assert!(!out.status.success(), "a client without a certificate got in: {}", stdout(&out));
    let (cert, key) = (stranger.cert.to_str().expect("path"), stranger.key.to_str().expect("path"));
    let out = curl(&["--cacert", ca_arg, "--cert", cert, "--key", key, &url]);
    assert!(!out.status.success(), "an untrusted certificate got in: {}", stdout(&out));
    let out = grpcurl(tls, &ca, &["-cert", cert, "-key", key, "-d", "{}"], &["shop.users.v1.UserService/GetUser"]);
    assert!(!out.status.success(), "an untrusted certificate got in: {}", stdout(&out));

    // A tonic client with its identity.
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&billing.cert).expect("read"),
        std::fs::read(&billing.key).expect("read"),
    );
    let channel = tonic_channel(tls, &authority.pem(), Some(identity)).await;
    let user = UserServiceClient::new(channel).get_user(GetUserRequest { id: "u-3".into() }).await.expect("call");
    assert!(user.get_ref().display_name.contains("URI=spiffe://example.org/billing"), "{:?}", user.get_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let (old, new) = (Authority::new("old CA"), Authority::new("new CA"));
    let (cert, key) = old.server();
    let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert_file, cert).expect("write");
    std::fs::write(&key_file, key).expect("write");
    let (old_ca, new_ca) = (dir.path().join("old-ca.pem"), dir.path().join("new-ca.pem"));
    std::fs::write(&old_ca, old.pem()).expect("write");
    std::fs::write(&new_ca, new.pem()).expect("write");
    let (gateway, tls) = serve(dir.path(), "").await;
    let url = format!("https://localhost:{}/v1/users/u-1", tls.port());
    let trusts = |ca: &Path| curl(&["--cacert", ca.to_str().expect("path"), &url]).status.success();
    assert!(trusts(&old_ca) && !trusts(&new_ca));

    // An HTTP/2 connection opened before the swap...
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tls_client(&old.pem(), None, &[b"h2"]).connect(name, tcp).await.expect("handshake");
    let (mut early, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2");
    tokio::spawn(connection);

    // A half-written certificate is refused and the old one keeps serving...
    replace(&cert_file, "-----BEGIN CERTIFICATE-----\nnot a certificate\n");
    gateway.wait_for_log(|l| l.contains("TLS reload failed")).await;
    assert!(trusts(&old_ca), "the old certificate serves on: {}", gateway.log());

    // ...and the new one, once whole, is served to the next connection.
    let (cert, key) = new.server();
    replace(&key_file, &key);
    replace(&cert_file, &cert);
    let swapped = async {
        while !trusts(&new_ca) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), swapped).await.expect("the new certificate is served");
    assert!(!trusts(&old_ca), "a new connection gets the new certificate only");

    // The connection from before the swap still works.
    let request = http::Request::get(format!("https://localhost:{}/v1/users/u-9", tls.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = early.send_request(request).await.expect("the old connection still serves");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_secret_swap_is_picked_up() {
    // A mounted secret: the files are symlinks through `..data`, itself a symlink to a timestamped
    // folder; an update writes a new folder and renames a new `..data` over the old one.
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tmp");
    let (old, new) = (Authority::new("old CA"), Authority::new("new CA"));
    let version = |name: &str, authority: &Authority| {
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).expect("dir");
        let (cert, key) = authority.server();
        std::fs::write(folder.join("tls.crt"), cert).expect("write");
        std::fs::write(folder.join("tls.key"), key).expect("write");
    };
    version("..2026_11_26_a", &old);
    symlink("..2026_11_26_a", dir.path().join("..data")).expect("symlink");
    symlink("..data/tls.crt", dir.path().join("server.pem")).expect("symlink");
    symlink("..data/tls.key", dir.path().join("server.key")).expect("symlink");
    let (old_ca, new_ca) = (dir.path().join("old-ca.pem"), dir.path().join("new-ca.pem"));
    std::fs::write(&old_ca, old.pem()).expect("write");
    std::fs::write(&new_ca, new.pem()).expect("write");
    let (_gateway, tls) = serve(dir.path(), "").await;
    let url = format!("https://localhost:{}/v1/users/u-1", tls.port());
    let trusts = |ca: &Path| curl(&["--cacert", ca.to_str().expect("path"), &url]).status.success();
    assert!(trusts(&old_ca) && !trusts(&new_ca));

    version("..2026_11_26_b", &new);
    symlink("..2026_11_26_b", dir.path().join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    let swapped = async {
        while !trusts(&new_ca) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), swapped).await.expect("the new certificate is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_certificates_anyone_gets_in_but_only_a_valid_certificate_counts() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, ca) = gateway_certificate(dir.path(), "server CA");
    let (billing, stranger) = client_certificates(dir.path());
    let (_gateway, tls) = serve(dir.path(), "  client_ca_file: clients.pem\n  client_cert: optional\n").await;
    let url = format!("https://localhost:{}/v1/users/u-1", tls.port());
    let ca = ca.to_str().expect("path");

    let anonymous = curl(&["--cacert", ca, &url]);
    assert!(stdout(&anonymous).contains("x-forwarded-client-cert=-"), "{} {}", stdout(&anonymous), stderr(&anonymous));
    let (cert, key) = (billing.cert.to_str().expect("path"), billing.key.to_str().expect("path"));
    let known = curl(&["--cacert", ca, "--cert", cert, "--key", key, &url]);
    assert!(stdout(&known).contains("x-forwarded-client-cert=Hash="), "{}", stdout(&known));
    let (cert, key) = (stranger.cert.to_str().expect("path"), stranger.key.to_str().expect("path"));
    let refused = curl(&["--cacert", ca, "--cert", cert, "--key", key, &url]);
    assert!(!refused.status.success(), "an invalid certificate is refused even when optional: {}", stdout(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_certificate_is_an_identity_the_rules_can_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, ca) = gateway_certificate(dir.path(), "server CA");
    let clients = Authority::new("clients CA");
    std::fs::write(dir.path().join("clients.pem"), clients.pem()).expect("write");
    let (billing, ops) = (client_cert(&clients, dir.path(), "billing"), client_cert(&clients, dir.path(), "ops"));
    let auth = "  client_ca_file: clients.pem\n  client_cert: optional\nauth:\n  client_certificates: true\n  \
                rules: [{match: shop.users.v1.UserService, identities: ['spiffe://example.org/billing']}]\n";
    let (_gateway, tls) = serve(dir.path(), auth).await;
    let url = format!("https://localhost:{}/v1/users/u-1", tls.port());
    let ca = ca.to_str().expect("path");
    // The HTTP status, then the body.
    let call = |client: Option<&ClientCert>| {
        let mut args = vec!["--cacert", ca, "-w", "\n%{http_code}"];
        if let Some(client) = client {
            args.extend(["--cert", client.cert.to_str().expect("path"), "--key", client.key.to_str().expect("path")]);
        }
        args.push(&url);
        let out = stdout(&curl(&args));
        let (body, status) = out.rsplit_once('\n').expect("a status line");
        (status.to_owned(), body.to_owned())
    };
    let (status, body) = call(None);
    assert_eq!(status, "401", "no certificate, no identity: {body}");
    assert!(body.contains("a client certificate"), "{body}");
    let (status, body) = call(Some(&ops));
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("\\\"spiffe://example.org/ops\\\" is not among the identities"), "{body}");
    let (status, body) = call(Some(&billing));
    assert_eq!(status, "200", "{body}");
}
