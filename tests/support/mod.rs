//! Shared set-up for the integration tests: the demo backends and a gateway in front of them on
//! 127.0.0.1:0, a descriptors folder of the test's own (so reload tests can drop files in), and
//! the real grpcurl. Everything stops on `Drop`.
#![allow(dead_code, unreachable_pub)]
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use dragoman::config::Config;
use dragoman::demo::Backends;
use dragoman::gateway::Gateway;
use tokio::sync::oneshot;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A descriptor set compiled from some of the demo's `.proto` files (relative to `proto/`).
pub fn demo_set(files: &[&str]) -> Vec<u8> {
    let proto = root().join("proto");
    let files: Vec<PathBuf> = files.iter().map(|f| proto.join(f)).collect();
    dragoman::catalog::compile_set(&files, &[proto]).expect("demo protos compile")
}

pub const USERS: &str = "shop/users/v1/users.proto";
pub const PRODUCTS: &str = "shop/products/v1/products.proto";
pub const ORDERS: &str = "shop/orders/v1/orders.proto";
pub const PAYMENTS: &str = "shop/payments/v1/payments.proto";

/// A gateway on a loopback port in front of the demo backends.
pub struct TestGateway {
    pub address: SocketAddr,
    pub gateway: Gateway,
    pub backends: Backends,
    /// The descriptors folder the gateway loads and watches.
    pub descriptors: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestGateway {
    /// The whole demo shop behind the gateway.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn builder() -> Builder {
        Builder {
            sets: vec![("shop.binpb".into(), dragoman::demo::DESCRIPTOR_SET.to_vec())],
            extra_yaml: String::new(),
            demo_rules: true,
            backends: Vec::new(),
            rest_yaml: String::new(),
            server_yaml: String::new(),
            websocket_yaml: String::new(),
            soap_yaml: String::new(),
            traces_yaml: String::new(),
            include: false,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A tonic channel to the gateway.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("gateway accepts connections")
    }

    /// Runs the real grpcurl against the gateway, through reflection only.
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        let address = self.address.to_string();
        let mut command = std::process::Command::new(grpcurl());
        command.arg("-plaintext");
        let (flags, rest): (Vec<&str>, Vec<&str>) = split_flags(args);
        command.args(flags).arg(&address).args(rest);
        command.output().expect("grpcurl runs")
    }

    /// Stops the gateway (as a shutdown signal would): it drains, its backends keep running.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until reloads have reached `generation` catalogs or `failures` failures.
    pub async fn wait_reload(
        &self,
        done: impl Fn(&dragoman::gateway::ReloadStatus) -> bool,
    ) -> dragoman::gateway::ReloadStatus {
        let mut reloads = self.gateway.reloads();
        let status = tokio::time::timeout(Duration::from_secs(20), reloads.wait_for(|s| done(s)))
            .await
            .expect("the reload happens within 20 s")
            .expect("gateway alive");
        status.clone()
    }
}

/// grpcurl wants its flags before the address and the rest after.
fn split_flags<'a>(args: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg.starts_with('-') && rest.is_empty() {
            flags.push(arg);
            if matches!(arg, "-d" | "-H" | "-max-time" | "-rpc-header" | "-reflect-header" | "-format") {
                i += 1;
                flags.push(args[i]);
            }
        } else {
            rest.push(arg);
        }
        i += 1;
    }
    (flags, rest)
}

pub struct Builder {
    sets: Vec<(String, Vec<u8>)>,
    extra_yaml: String,
    demo_rules: bool,
    /// Demo services routed somewhere else than their demo backend.
    backends: Vec<(String, String)>,
    rest_yaml: String,
    server_yaml: String,
    websocket_yaml: String,
    soap_yaml: String,
    traces_yaml: String,
    include: bool,
}

impl Builder {
    /// Load these descriptor sets instead of the whole demo set.
    pub fn sets(mut self, sets: Vec<(&str, Vec<u8>)>) -> Self {
        self.sets = sets.into_iter().map(|(n, b)| (n.to_owned(), b)).collect();
        self
    }

    /// Config lines appended after the demo's `services:` rules (more `  - match:` entries).
    pub fn rules(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self
    }

    /// Top-level config sections, as they are (`auth:`, `rate_limits:`), after `services:`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self
    }

    /// Route one demo service to `address` instead of its demo backend.
    pub fn backend(mut self, service: &str, address: &str) -> Self {
        self.backends.push((service.to_owned(), address.to_owned()));
        self
    }

    /// Adds the repository's `proto/` to `proto_include`, for `.proto` sources that import
    /// google/api annotations.
    pub fn include_repo_protos(mut self) -> Self {
        self.include = true;
        self
    }

    /// Lines of the config's `rest:` section (indented two spaces).
    pub fn rest(mut self, yaml: &str) -> Self {
        self.rest_yaml.push_str(yaml);
        self
    }

    /// Lines of the config's `server:` section (indented two spaces).
    pub fn server(mut self, yaml: &str) -> Self {
        self.server_yaml.push_str(yaml);
        self
    }

    /// Lines of the config's `websocket:` section (indented two spaces).
    pub fn websocket(mut self, yaml: &str) -> Self {
        self.websocket_yaml.push_str(yaml);
        self
    }

    /// Lines of the config's `soap:` section (indented two spaces).
    pub fn soap(mut self, yaml: &str) -> Self {
        self.soap_yaml.push_str(yaml);
        self
    }

    /// Lines of the config's `traces:` section (indented two spaces).
    pub fn traces(mut self, yaml: &str) -> Self {
        self.traces_yaml.push_str(yaml);
        self
    }

    /// Leave the demo services without backends.
    pub fn without_demo_rules(mut self) -> Self {
        self.demo_rules = false;
        self
    }

    pub async fn start(self) -> TestGateway {
        let backends = Backends::start().await.expect("demo backends start");
        let dir = tempfile::tempdir().expect("temp dir");
        let descriptors = dir.path().join("descriptors");
        std::fs::create_dir(&descriptors).expect("descriptors dir");
        for (name, bytes) in &self.sets {
            std::fs::write(descriptors.join(name), bytes).expect("write set");
        }
        let services = match (self.demo_rules, self.extra_yaml.is_empty()) {
            (true, _) => {
                let mut yaml = String::from("services:\n");
                for (name, address) in dragoman::demo::SERVICES.iter().zip(backends.addresses) {
                    let address =
                        self.backends.iter().find(|(s, _)| s == name).map_or(address.to_string(), |(_, a)| a.clone());
                    yaml.push_str(&format!("  - match: {name}\n    backends: [http://{address}]\n"));
                }
                yaml
            }
            (false, false) => "services:\n".to_owned(),
            (false, true) => "services: []\n".to_owned(),
        };
        let mut rest = if self.rest_yaml.is_empty() { String::new() } else { format!("rest:\n{}", self.rest_yaml) };
        if !self.server_yaml.is_empty() {
            rest.push_str(&format!("server:\n{}", self.server_yaml));
        }
        if !self.websocket_yaml.is_empty() {
            rest.push_str(&format!("websocket:\n{}", self.websocket_yaml));
        }
        if !self.soap_yaml.is_empty() {
            rest.push_str(&format!("soap:\n{}", self.soap_yaml));
        }
        if !self.traces_yaml.is_empty() {
            rest.push_str(&format!("traces:\n{}", self.traces_yaml));
        }
        if self.include {
            rest.push_str(&format!("proto_include: [{}]\n", root().join("proto").display()));
        }
        let yaml = format!(
            "listen: 127.0.0.1:0\ndescriptors: [{}]\n{rest}{services}{}",
            descriptors.display(),
            self.extra_yaml
        );
        let config = Config::parse(&yaml, Path::new(".")).expect("test config is valid");
        let gateway = Gateway::new(config).expect("catalog loads");
        gateway.watch().expect("watch starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        tokio::spawn(async move {
            let _ = dragoman::server::serve(vec![dragoman::server::Listener::new(listener, None)], serving, 2, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestGateway { address, gateway, backends, descriptors, _dir: dir, stop: Some(stop) }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The grpcurl the test command installs (scripts/install-test-tools.sh), or $GRPCURL.
pub fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let path = root().join("target/tools/grpcurl");
    assert!(path.exists(), "grpcurl missing: run scripts/install-test-tools.sh (the test command does)");
    path
}

/// The Python with zeep 4.3 installed, a WSDL-driven SOAP client (scripts/install-test-tools.sh).
pub fn zeep_python() -> PathBuf {
    let path = root().join("target/tools/zeep/bin/python");
    assert!(path.exists(), "zeep missing: run scripts/install-test-tools.sh (the test command does)");
    path
}

/// A `dragoman` process a test started (`serve`, `demo`), known to be listening: its address is
/// taken from its "dragoman listening" log line, so nothing polls the port. Its log is read to the
/// end as it comes (the process never blocks on a full pipe) and kept for the test. Killed on
/// `Drop` if still running.
pub struct Running {
    child: std::process::Child,
    pub address: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Spawns `command` logging at info to a pipe and waits for it to listen (a 30 s hang guard
    /// turns a gateway that never does into a failure).
    pub fn start(mut command: std::process::Command) -> Self {
        use std::io::BufRead;
        command.env("RUST_LOG", "info").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("dragoman starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (listening, listens) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("dragoman listening") {
                    let address = line.split_whitespace().find_map(|w| w.strip_prefix("address="));
                    let _ = listening.send(address.and_then(|a| a.parse::<SocketAddr>().ok()));
                }
                let mut log = lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut running = Running { child, address: ([0, 0, 0, 0], 0).into(), log, reader: Some(reader) };
        // Disconnected when the process exits without listening: its log says why.
        match listens.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(address)) => running.address = address,
            Ok(None) => panic!("no address= in the listening line:\n{}", running.log()),
            Err(e) => panic!("dragoman is not listening ({e}):\n{}", running.log()),
        }
        running
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
        assert!(sent.success(), "SIG{signal} sent");
    }

    /// Waits (up to 20 s) until the log has a line `matches` accepts, and returns that line.
    pub async fn wait_for_log(&self, matches: impl Fn(&str) -> bool) -> String {
        for _ in 0..400 {
            if let Some(line) = self.log().lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no such line in the log:\n{}", self.log());
    }

    /// Sends SIGTERM and waits for the process to exit; the log is then complete.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let status = self.child.wait().expect("exits");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `backend` example (examples/backend.rs) built beside this test binary:
/// `target/<profile>/deps/<test>` → `target/<profile>/examples/backend`. `cargo test --all-targets`
/// builds it; a bare `cargo test --test …` may not.
pub fn backend_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile.join("examples").join(format!("backend{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} missing: run `cargo build --example backend`", path.display());
    path
}

/// A `backend` example process (a UserService answering GetUser, see examples/backend.rs),
/// known to be listening: its address is its first line on stdout. Killed on `Drop`.
pub struct BackendProcess {
    child: std::process::Child,
    pub address: SocketAddr,
}

impl BackendProcess {
    /// Starts one on `listen` (port 0: a free one) answering as `name` after `delay` (`"0s"`,
    /// `"50ms"`); a 10 s hang guard turns one that never listens into a failure.
    pub fn start(listen: &str, name: &str, delay: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(backend_example())
            .args(["--listen", listen, "--name", name, "--delay", delay])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the backend example starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (first, line) = std::sync::mpsc::channel();
        // Reads on to the end, so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = first.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        let line = match line.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(line)) => line,
            other => {
                let _ = child.kill();
                panic!("backend {name} on {listen} did not say where it listens: {other:?}")
            }
        };
        let address = line.strip_prefix("listening ").and_then(|a| a.parse().ok());
        let address = address.unwrap_or_else(|| panic!("not `listening <address>`: {line}"));
        BackendProcess { child, address }
    }

    /// SIGKILL: the process dies at once, its connections reset, nothing drained.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("reaped");
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a raw HTTP/2 gRPC call got back.
pub struct RawReply {
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl RawReply {
    /// `grpc-status`, from the trailers or a Trailers-Only response's headers.
    pub fn status(&self) -> Option<i32> {
        let from = |h: &http::HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
        self.trailers.as_ref().and_then(from).or_else(|| from(&self.headers))
    }
}

/// A bare HTTP/2 (h2c) client connection to `address`, driven by a task of its own.
pub async fn h2_client<B>(address: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A unary gRPC call with a bare HTTP/2 client and no timers of its own (tonic's client enforces
/// `grpc-timeout` itself, which would race the gateway's deadline).
pub async fn raw_unary(
    address: SocketAddr,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> RawReply {
    use http_body_util::BodyExt;
    let mut sender = h2_client(address).await;
    let mut request = grpc_request(address, path, message);
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    RawReply { headers: parts.headers, body: collected.to_bytes(), trailers }
}

/// A gRPC request of one message, for a bare HTTP/2 client.
pub fn grpc_request(
    address: SocketAddr,
    path: &str,
    message: &impl prost::Message,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&payload);
    http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .expect("request")
}

/// Waits until what `values` publishes satisfies `done` (a demo shop's counters, say) and returns
/// that value; the 10 s hang guard turns "never" into a failure that says `what` did not happen.
pub async fn wait_for<T: Clone>(
    mut values: tokio::sync::watch::Receiver<T>,
    what: &str,
    done: impl FnMut(&T) -> bool,
) -> T {
    let value = tokio::time::timeout(Duration::from_secs(10), values.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
        .expect("the publisher is alive");
    value.clone()
}

/// What a plain HTTP request got back.
pub struct HttpReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request to the gateway, as a browser or curl would send it.
pub async fn http(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("h1");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body)))
        .expect("request");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_str(&address.to_string()).expect("host"));
    }
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    HttpReply { status: parts.status.as_u16(), headers: parts.headers, body }
}

pub async fn get(address: SocketAddr, path: &str) -> HttpReply {
    http(address, "GET", path, &[], b"").await
}

pub async fn post_json(address: SocketAddr, path: &str, json: &str) -> HttpReply {
    http(address, "POST", path, &[("content-type", "application/json")], json.as_bytes()).await
}

/// A UserService that shows what reached it: GetUser answers with the metadata it saw in
/// `display_name` and sends metadata back; id "fail" fails with details and trailer metadata.
struct Echo;

#[tonic::async_trait]
impl dragoman::demo::pb::shop::users::v1::user_service_server::UserService for Echo {
    async fn get_user(
        &self,
        request: tonic::Request<dragoman::demo::pb::shop::users::v1::GetUserRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status> {
        let seen = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let display_name = [
            "x-request-id",
            "grpc-timeout",
            "authorization",
            "connection",
            "x-forwarded-for",
            "content-type",
            "te",
            "x-forwarded-client-cert",
        ]
        .iter()
        .map(|h| format!("{h}={}", seen(h)))
        .collect::<Vec<_>>()
        .join(" ");
        if request.get_ref().id == "fail" {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("x-error-detail", "in the trailers".parse().expect("ascii"));
            return Err(tonic::Status::with_details_and_metadata(
                tonic::Code::Aborted,
                "echo refuses",
                b"\x01\x02detail".to_vec().into(),
                metadata,
            ));
        }
        let user = dragoman::demo::pb::shop::users::v1::User {
            id: request.get_ref().id.clone(),
            display_name,
            ..Default::default()
        };
        let mut response = tonic::Response::new(user);
        response.metadata_mut().insert("x-served-by", "echo".parse().expect("ascii"));
        response.metadata_mut().insert("x-echo", "yes".parse().expect("ascii"));
        Ok(response)
    }
    async fn create_user(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::users::v1::CreateUserRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo only answers GetUser"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::users::v1::ListUsersRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::ListUsersResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo only answers GetUser"))
    }
}

/// Starts [`Echo`] on a loopback port, gzip both ways.
pub async fn start_echo() -> SocketAddr {
    use dragoman::demo::pb::shop::users::v1::user_service_server::UserServiceServer;
    use tonic::codec::CompressionEncoding;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = UserServiceServer::new(Echo)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// An HTTP request whose response body is read as it arrives; HTTP/2 (h2c) when `h2`, so the
/// request body can keep streaming while responses come back.
pub async fn http_stream(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
    h2: bool,
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .header("host", address.to_string())
        .body(body)
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("response")
    }
}

/// Reads the next chunk of a streamed body as text (None at the end).
pub async fn next_chunk(body: &mut hyper::body::Incoming) -> Option<String> {
    use http_body_util::BodyExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("no stall")?.expect("ok");
        // An empty DATA frame is how HTTP/2 may carry END_STREAM: not a chunk.
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Some(String::from_utf8_lossy(&data).into_owned());
            }
        }
    }
}

/// An empty request body for [`http_stream`].
pub fn no_body() -> http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible> {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().boxed()
}

/// A gRPC backend over h2c on a loopback port that answers every call with what `answer` makes
/// of the request's body: response headers (besides the content type), body and trailers.
pub async fn start_grpc_backend<F>(answer: F) -> SocketAddr
where
    F: Fn(bytes::Bytes) -> (http::HeaderMap, bytes::Bytes, Option<http::HeaderMap>) + Clone + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let body = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let (headers, body, trailers) = answer(body);
                        let body = http_body_util::Full::new(body).with_trailers(std::future::ready(trailers.map(Ok)));
                        let mut response = http::Response::new(body);
                        *response.headers_mut() = headers;
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

/// Trailers with `grpc-status: 0`.
fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// A gRPC backend that answers every call with the request's own messages (for methods whose
/// output type is their input type): what the gateway sent is what comes back.
pub async fn start_mirror() -> SocketAddr {
    start_grpc_backend(|body| {
        let mut trailers = ok_trailers();
        trailers.insert("x-mirror-trailer", http::HeaderValue::from_static("done"));
        (http::HeaderMap::new(), body, Some(trailers))
    })
    .await
}

/// A gateway serving `tests/proto/<name>.proto` (package `<name>.*`) in front of a mirror, so what
/// comes back is what the gateway sent; `rest` holds lines of the `rest:` section.
pub async fn mirrored(name: &str, rest: &str) -> TestGateway {
    let mirror = start_mirror().await;
    let file = format!("{name}.proto");
    let proto = std::fs::read(root().join("tests/proto").join(&file)).expect("test proto");
    TestGateway::builder()
        .sets(vec![(file.as_str(), proto)])
        .include_repo_protos()
        .without_demo_rules()
        .rules(&format!("  - match: {name}.*\n    backends: [http://{mirror}]\n"))
        .rest(rest)
        .start()
        .await
}

/// A gRPC backend that answers every call with these encoded messages, then status OK: for
/// replies no honest client could make a mirror send back.
pub async fn start_answering(messages: Vec<Vec<u8>>) -> SocketAddr {
    let mut frames = Vec::new();
    for message in &messages {
        frames.push(0u8);
        frames.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        frames.extend_from_slice(message);
    }
    let frames = bytes::Bytes::from(frames);
    start_grpc_backend(move |_| (http::HeaderMap::new(), frames.clone(), Some(ok_trailers()))).await
}

/// What the gateway logs, captured for tests that check a detail went to the log rather than
/// to the client. The subscriber is global to the test binary, so look for something unique
/// to the test (a port number).
pub fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs(std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,h2=info,hyper=info,tower=info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

#[derive(Clone)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a [`start_held`] backend sends in its reply body.
pub type HeldFrames = tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>;

/// A gRPC backend for one call that sends its response headers at once and then, in its body,
/// exactly the frames the test sends (gRPC-framed messages, then trailers) when it sends them.
pub async fn start_held() -> (SocketAddr, HeldFrames) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (frames, held) = tokio::sync::mpsc::channel(8);
    let held = std::sync::Arc::new(tokio::sync::Mutex::new(Some(held)));
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let service = hyper::service::service_fn(move |_request: http::Request<hyper::body::Incoming>| {
            let held = held.clone();
            async move {
                let receiver = held.lock().await.take();
                let stream = futures_util::stream::unfold(receiver, |receiver| async move {
                    let mut receiver = receiver?;
                    let frame = receiver.recv().await?;
                    Some((frame, Some(receiver)))
                });
                let mut response = http::Response::new(http_body_util::StreamBody::new(stream));
                response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
            .await;
    });
    (address, frames)
}

/// A gRPC backend that refuses every call with these headers as a Trailers-Only response (a
/// `grpc-status`, a `grpc-message`, `grpc-status-details-bin`...).
pub async fn start_refusing(status: http::HeaderMap) -> SocketAddr {
    start_grpc_backend(move |_| (status.clone(), bytes::Bytes::new(), None)).await
}

/// A demo `UserService` whose GetUser is `answer` and whose other methods are UNIMPLEMENTED: the
/// backend the balancing, health and DNS tests need, without a trait impl of their own each.
pub fn get_user_service<F, Fut>(
    answer: F,
) -> dragoman::demo::pb::shop::users::v1::user_service_server::UserServiceServer<GetUserOnly<F>>
where
    F: Fn(tonic::Request<dragoman::demo::pb::shop::users::v1::GetUserRequest>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status>>
        + Send
        + 'static,
{
    dragoman::demo::pb::shop::users::v1::user_service_server::UserServiceServer::new(GetUserOnly(answer))
}

/// See [`get_user_service`].
pub struct GetUserOnly<F>(F);

#[tonic::async_trait]
impl<F, Fut> dragoman::demo::pb::shop::users::v1::user_service_server::UserService for GetUserOnly<F>
where
    F: Fn(tonic::Request<dragoman::demo::pb::shop::users::v1::GetUserRequest>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status>>
        + Send
        + 'static,
{
    async fn get_user(
        &self,
        request: tonic::Request<dragoman::demo::pb::shop::users::v1::GetUserRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status> {
        (self.0)(request).await
    }
    async fn create_user(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::users::v1::CreateUserRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::User>, tonic::Status> {
        Err(tonic::Status::unimplemented("GetUser only"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::users::v1::ListUsersRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::users::v1::ListUsersResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("GetUser only"))
    }
}

/// A TLS acceptor (ALPN h2) with a fresh self-signed certificate for `name`, and that
/// certificate's PEM, for a test's CA file.
pub fn tls_acceptor(name: &str) -> (tokio_rustls::TlsAcceptor, String) {
    let key = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key");
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![key.cert.der().clone()], private)
            .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    (tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)), key.cert.pem())
}

/// A TLS gRPC backend on 127.0.0.1 (certificate for "localhost", see [`tls_acceptor`]) serving
/// `routes`; returns its port and the certificate's PEM.
pub async fn start_tls_backend(routes: tonic::service::Routes) -> (u16, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (acceptor, pem) = tls_acceptor("localhost");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), hyper_util::service::TowerToHyperService::new(routes))
                    .await;
            });
        }
    });
    (port, pem)
}
