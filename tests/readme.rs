//! The README does not lie: every grpcurl and curl example in it runs against the real
//! `dragoman demo`, and what the README says of their output holds. They run in the README's
//! order against one demo, as a user would run them: they change the shop (the grpcurl
//! CreateOrder makes `o-2`, which a curl example then adds to). Its config example is a valid
//! config.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Running, root};

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The lines of the README's code blocks of one language.
fn blocks(language: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme().lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == format!("```{language}") => current = Some(String::new()),
            (Some(block), "```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The README's grpcurl and curl examples, in order.
fn examples() -> Vec<String> {
    let commands = |block: &String| -> Vec<String> {
        block.lines().filter(|l| l.starts_with("grpcurl ") || l.starts_with("curl ")).map(str::to_owned).collect()
    };
    blocks("sh").iter().flat_map(commands).collect()
}

/// What one example did.
struct Ran {
    example: String,
    success: bool,
    stdout: String,
    /// grpcurl's errors; curl's response head (`-D /dev/stderr`).
    stderr: String,
}

impl Ran {
    /// stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{}", self.example, self.stdout))
    }

    /// stdout as the JSON documents it holds one after the other: grpcurl prints one per
    /// message, NDJSON is one per line.
    fn documents(&self) -> Vec<Value> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: not JSON documents ({e}):\n{}", self.example, self.stdout))
    }

    /// NDJSON: each line one JSON document.
    fn lines(&self) -> Vec<Value> {
        assert!(self.stdout.ends_with('\n'), "{}: lines end with a newline: {:?}", self.example, self.stdout);
        let parse = |l: &str| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: line {l:?}: {e}", self.example));
        self.stdout.lines().map(parse).collect()
    }

    /// The HTTP status curl got.
    fn http_status(&self) -> u16 {
        let status = self.stderr.lines().next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
        status.unwrap_or_else(|| panic!("{}: no HTTP status in:\n{}", self.example, self.stderr))
    }

    /// A header of curl's response.
    fn header(&self, name: &str) -> Option<String> {
        self.stderr.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// What one README example must do: `example` picks it out of the README (it is in exactly one
/// example), `fails` says whether it shows an error, `check` what its output must be.
struct Case {
    example: &'static str,
    fails: bool,
    check: fn(&Ran),
}

impl Case {
    const fn ok(example: &'static str, check: fn(&Ran)) -> Self {
        Case { example, fails: false, check }
    }

    const fn error(example: &'static str, check: fn(&Ran)) -> Self {
        Case { example, fails: true, check }
    }
}

const ORDER_STATUSES: [&str; 4] =
    ["ORDER_STATUS_PLACED", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED", "ORDER_STATUS_DELIVERED"];

fn product_ids(order: &Value) -> Vec<&str> {
    order["items"].as_array().map_or(vec![], |items| items.iter().filter_map(|i| i["productId"].as_str()).collect())
}

/// Every example, in README order. The README says which examples show errors: `GetUser` with
/// `u-404` and the wrong type (`"email": 5`); everything else succeeds.
const CASES: &[Case] = &[
    // grpcurl
    Case::ok("8080 list", |ran| {
        let listed: Vec<&str> = ran.stdout.lines().collect();
        for service in dragoman::demo::SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(listed.contains(service), "{service} listed: {listed:?}");
        }
    }),
    Case::ok("describe shop.orders.v1.OrderService", |ran| {
        let rpc = "rpc WatchOrder ( .shop.orders.v1.WatchOrderRequest ) returns ( stream .shop.orders.v1.OrderEvent )";
        assert!(ran.stdout.contains(rpc), "{}", ran.stdout);
    }),
    Case::ok("describe shop.products.v1.Product", |ran| {
        assert!(ran.stdout.contains("message Product {"), "{}", ran.stdout);
    }),
    // "The shop starts with a customer u-1".
    Case::ok("8080 shop.users.v1.UserService/GetUser", |ran| {
        assert_eq!(ran.json()["displayName"], "Ada Lovelace", "{}", ran.stdout);
    }),
    Case::ok("ProductService/ListProducts", |ran| {
        let products = ran.json()["products"].as_array().cloned().unwrap_or_default();
        assert!(!products.is_empty() && products.iter().all(|p| p["category"] == "books"), "{}", ran.stdout);
    }),
    // The order the curl addLineItems example adds to.
    Case::ok("OrderService/CreateOrder", |ran| {
        assert_eq!(ran.json()["id"], "o-2", "{}", ran.stdout);
    }),
    Case::ok("OrderService/AddLineItems", |ran| {
        assert_eq!(product_ids(&ran.json()), ["p-1", "p-2", "p-3"], "{}", ran.stdout);
    }),
    // Bidirectional: a cart back per action.
    Case::ok("OrderService/LiveCart", |ran| {
        let carts = ran.documents();
        let revisions: Vec<i64> = carts.iter().filter_map(|c| c["revision"].as_i64()).collect();
        assert_eq!(revisions, [1, 2, 3], "{}", ran.stdout);
        assert_eq!(product_ids(&carts[2]), ["p-4"], "{}", ran.stdout);
    }),
    Case::ok("PaymentService/Charge", |ran| {
        assert_eq!(ran.json()["state"], "PAYMENT_STATE_CAPTURED", "{}", ran.stdout);
    }),
    Case::ok("grpc.health.v1.Health/Check", |ran| assert_eq!(ran.json(), json!({"status": "SERVING"}))),
    // Server streaming that "moves the order on to delivered", then ends.
    Case::ok("OrderService/WatchOrder", |ran| {
        let statuses: Vec<Value> = ran.documents().iter().map(|e| e["status"].clone()).collect();
        assert_eq!(statuses, ORDER_STATUSES, "{}", ran.stdout);
    }),
    // curl
    Case::ok("8080/v1/users/u-1", |ran| {
        assert_eq!(ran.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(ran.json()["displayName"], "Ada Lovelace", "{}", ran.stdout);
    }),
    Case::ok("/v1/products?category=books", |ran| {
        let products = ran.json()["products"].as_array().cloned().unwrap_or_default();
        assert!(!products.is_empty() && products.iter().all(|p| p["category"] == "books"), "{}", ran.stdout);
    }),
    // response_body: the bare list.
    Case::ok("/v1/categories/garden/products", |ran| {
        assert_eq!(ran.json()[0]["name"], "Garden Difference Engine", "{}", ran.stdout);
    }),
    // int64 as a string, enums by name, lowerCamelCase.
    Case::ok("/v1/orders -H", |ran| {
        let order = ran.json();
        assert_eq!(order["status"], "ORDER_STATUS_PLACED", "{order}");
        assert_eq!(order["total"], json!({"currencyCode": "EUR", "units": "9", "nanos": 980_000_000}), "{order}");
    }),
    Case::ok("/v1/products -H", |ran| assert_eq!(ran.json()["name"], "Cog", "{}", ran.stdout)),
    Case::ok("/v1/products:import", |ran| {
        let names: Vec<Value> =
            ran.json()["products"].as_array().map_or(vec![], |p| p.iter().map(|p| p["name"].clone()).collect());
        assert_eq!(names, ["Sprocket", "Flywheel"], "{}", ran.stdout);
    }),
    // HttpBody: the bytes come with their own content type.
    Case::ok("/v1/products/p-1/image", |ran| assert_eq!(ran.stdout, "image/svg+xml\n")),
    // Client streaming as NDJSON, to the order the grpcurl CreateOrder made.
    Case::ok("/v1/orders:addLineItems", |ran| {
        let order = ran.json();
        assert_eq!((&order["id"], product_ids(&order)), (&json!("o-2"), vec!["p-1", "p-3", "p-4"]), "{order}");
    }),
    // Bidirectional: a `{"result": cart}` line per action.
    Case::ok("/v1/cart:live", |ran| {
        let carts: Vec<Value> = ran.lines().iter().map(|l| l["result"].clone()).collect();
        let revisions: Vec<i64> = carts.iter().filter_map(|c| c["revision"].as_i64()).collect();
        assert_eq!(revisions, [1, 2], "{}", ran.stdout);
        assert_eq!((product_ids(&carts[0]), product_ids(&carts[1])), (vec!["p-1"], vec![]), "{}", ran.stdout);
    }),
    Case::ok("8080/shop.users.v1.UserService/GetUser", |ran| assert_eq!(ran.json()["email"], "ada@example.com")),
    // "one {"result": ...} per line" up to delivery, then the stream ends.
    Case::ok(":watch?interval=0.2s", |ran| {
        assert_eq!(ran.header("content-type").as_deref(), Some("application/x-ndjson"));
        let events: Vec<Value> = ran.lines().iter().map(|l| l["result"].clone()).collect();
        assert!(events.iter().all(|e| e["orderId"] == "o-1"), "{}", ran.stdout);
        assert_eq!(events.last().map(|e| &e["status"]), Some(&json!("ORDER_STATUS_DELIVERED")));
    }),
    // Server-Sent Events: a `data:` line per message.
    Case::ok("accept: text/event-stream", |ran| {
        assert_eq!(ran.header("content-type").as_deref(), Some("text/event-stream"));
        assert!(ran.stdout.ends_with("\n\n"), "events end with a blank line: {:?}", ran.stdout);
        let event = |e: &str| -> Value {
            let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("a data: line: {e:?}"));
            serde_json::from_str(data).unwrap_or_else(|err| panic!("{data:?}: {err}"))
        };
        let events: Vec<Value> = ran.stdout.split_terminator("\n\n").map(event).collect();
        assert!(events.iter().all(|e| e["orderId"] == "o-1"), "{}", ran.stdout);
        assert_eq!(events.last().map(|e| &e["status"]), Some(&json!("ORDER_STATUS_DELIVERED")));
    }),
    // "Errors are always JSON google.rpc.Status — {...} — with the HTTP status of
    // google/rpc/code.proto (404 here)": the README's text, to the byte.
    Case::error("/v1/users/u-404", |ran| {
        assert_eq!(ran.http_status(), 404);
        let readme = readme();
        let shown = readme.split('`').find(|s| s.starts_with(r#"{"code":5,"#)).expect("the README shows the error");
        assert_eq!(ran.stdout, shown);
    }),
    // "a wrong type is a 400 naming the field and position".
    Case::error(r#""email": 5"#, |ran| {
        assert_eq!(ran.http_status(), 400);
        let error = ran.json();
        let message = error["message"].as_str().unwrap_or_default();
        assert!(error["code"] == 3 && message.contains("email") && message.contains("column"), "{error}");
    }),
    // SOAP: the listing, a WSDL whose address is the host asked for, a 1.1 call, a 1.2 fault.
    Case::ok("soap/ -H 'accept: text/html'", |ran| {
        assert!(ran.stdout.contains("<a href=\"/soap/shop.orders.v1.OrderService?wsdl\">"), "{}", ran.stdout);
    }),
    Case::ok("UserService?wsdl", |ran| {
        assert!(ran.stdout.starts_with("<?xml"), "{}", ran.stdout);
        // The address is the host the client asked for.
        let address = regex::Regex::new(
            r#"<soap:address location="http://127\.0\.0\.1:\d+/soap/shop\.users\.v1\.UserService"/>"#,
        );
        assert!(address.expect("regex").is_match(&ran.stdout), "{}", ran.stdout);
        assert!(ran.stdout.contains("<xs:complexType name=\"User\">"), "{}", ran.stdout);
    }),
    Case::ok("SOAPAction", |ran| {
        let answer = "<GetUserResponse xmlns=\"urn:dragoman:shop.users.v1\"><id>u-1</id><email>ada@example.com</email>";
        assert!(ran.stdout.contains(answer), "{}", ran.stdout);
        let readme = readme();
        assert!(readme.contains(&format!("`{answer}...`")), "the README shows the answer");
    }),
    Case::error("application/soap+xml", |ran| {
        assert_eq!(ran.http_status(), 400);
        assert!(ran.stdout.contains("<env:Value>env:Sender</env:Value>"), "{}", ran.stdout);
        assert!(ran.stdout.contains(">grpc:NOT_FOUND</env:Value>"), "{}", ran.stdout);
    }),
    Case::ok("accept: application/xml", |ran| {
        assert_eq!(ran.header("content-type").as_deref(), Some("application/xml; charset=utf-8"));
        assert!(ran.stdout.contains("<Product xmlns=\"urn:dragoman:shop.products.v1\"><id>p-2</id>"), "{}", ran.stdout);
    }),
    Case::ok("8081/readyz", |ran| assert_eq!(ran.stdout, "ready\n")),
    Case::ok("8081/admin/backends", |ran| {
        let backends = ran.json()["backends"].as_array().cloned().unwrap_or_default();
        assert_eq!(backends.len(), 4, "the demo's four backends: {}", ran.stdout);
        // The examples above called every demo service: each has a connection and calls.
        assert!(backends.iter().all(|b| b["state"] == "up" && b["calls"].as_u64() > Some(0)), "{}", ran.stdout);
    }),
    Case::ok("8081/metrics", |ran| {
        let ok = r#"rpc_method="shop.users.v1.UserService/GetUser",rpc_response_status_code="OK""#;
        assert!(ran.stdout.contains(ok), "the examples' calls are counted: {}", ran.stdout);
        assert!(ran.stdout.contains("dragoman_backend_calls_total{backend="), "{}", ran.stdout);
    }),
    Case::ok("/openapi.json", |ran| {
        let doc = ran.json();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "OpenAPI 3.1: {}", doc["openapi"]);
        assert!(doc["paths"]["/v1/orders/{id}:watch"]["get"].is_object(), "every route is documented");
    }),
];

/// Runs one example as a shell would, against `address`; curl is told to fail on an HTTP error
/// (printing the body all the same) and to show its response head on stderr. A 30 s hang guard
/// turns an example that never ends (a stream that does not close) into a failure.
async fn run(example: &str, address: &str, admin: &str) -> Ran {
    let mut command = example.replace("127.0.0.1:8080", address).replace("127.0.0.1:8081", admin);
    if example.starts_with("curl ") {
        command = command.replacen("curl ", "curl --fail-with-body -D /dev/stderr ", 1);
    }
    let tools = support::grpcurl().parent().expect("tools folder").to_owned();
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default());
    // Not sh: the curl examples use bash's $'...' quoting.
    let mut bash = tokio::process::Command::new("bash");
    bash.arg("-c").arg(&command).env("PATH", &path).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), bash.output())
        .await
        .unwrap_or_else(|_| panic!("README example still running after 30 s: {example}"))
        .expect("bash runs");
    Ran {
        example: example.to_owned(),
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_works_against_the_demo_as_the_readme_says() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.current_dir(root()).args(["demo", "--listen", "127.0.0.1:0"]);
    let demo = tokio::task::spawn_blocking(move || Running::start(command)).await.expect("join");
    let address = demo.address.to_string();
    let line = demo.wait_for_log(|l| l.contains("admin listening")).await;
    let admin = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("admin address").to_owned();

    let examples = examples();
    let mut used = vec![0; CASES.len()];
    for example in &examples {
        let matching: Vec<usize> = (0..CASES.len()).filter(|&i| example.contains(CASES[i].example)).collect();
        let [case] = matching[..] else { panic!("{} cases for README example {example}", matching.len()) };
        used[case] += 1;
        let Case { fails, check, .. } = CASES[case];
        let ran = run(example, &address, &admin).await;
        let said = format!("README example: {example}\n{}{}", ran.stdout, ran.stderr);
        assert_eq!(ran.success, !fails, "{}: {said}", if fails { "shows an error, must fail" } else { "must succeed" });
        assert!(!ran.stdout.trim().is_empty(), "printed nothing: {said}");
        check(&ran);
    }
    for (case, n) in CASES.iter().zip(used) {
        assert_eq!(n, 1, "{:?} picks out {n} README examples", case.example);
    }

    // What the text says of variants of the examples: GetUser with u-404 is NotFound, a declined
    // card FailedPrecondition, and tok_slow with -max-time 1 DeadlineExceeded.
    let pick = |fragment: &str| examples.iter().find(|e| e.starts_with("grpcurl ") && e.contains(fragment)).cloned();
    let get_user = pick("UserService/GetUser").expect("a grpcurl GetUser example");
    let charge = pick("PaymentService/Charge").expect("a grpcurl Charge example");
    assert!(get_user.contains(r#""u-1""#) && charge.contains("tok_visa"), "{get_user}\n{charge}");
    let variants = [
        (get_user.replace(r#""u-1""#, r#""u-404""#), &["Code: NotFound", r#"no user with id "u-404""#][..]),
        (charge.replace("tok_visa", "tok_declined"), &["Code: FailedPrecondition"]),
        (
            charge.replace("tok_visa", "tok_slow").replacen("grpcurl ", "grpcurl -max-time 1 ", 1),
            &["Code: DeadlineExceeded"],
        ),
    ];
    for (variant, says) in variants {
        let ran = run(&variant, &address, &admin).await;
        assert!(!ran.success, "fails: {variant}");
        assert!(says.iter().all(|s| ran.stderr.contains(s)), "{variant}: {}", ran.stderr);
    }
    drop(demo);
}

#[test]
fn config_example_is_valid() {
    let yaml = blocks("yaml").into_iter().next().expect("a yaml block");
    let dir = tempfile::tempdir().expect("tmp");
    // What the example refers to: a CA file and the descriptors folder.
    std::fs::create_dir_all(dir.path().join("certs")).expect("dir");
    let ca = rcgen::generate_simple_self_signed(vec!["billing.internal".to_owned()]).expect("cert");
    std::fs::write(dir.path().join("certs/internal-ca.pem"), ca.cert.pem()).expect("write");
    std::fs::write(dir.path().join("certs/clients-ca.pem"), ca.cert.pem()).expect("write");
    let gateway = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(dir.path().join("certs/gateway.pem"), gateway.cert.pem()).expect("write");
    std::fs::write(dir.path().join("certs/gateway.key"), gateway.signing_key.serialize_pem()).expect("write");
    let key = dragoman::policy::auth::api_key::hash_hex("another key");
    std::fs::write(dir.path().join("keys.yaml"), format!("- {{name: reports, sha256: {key}}}\n")).expect("write");
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, &yaml).expect("write");
    let config = dragoman::config::Config::load(&config_path).expect("the README's config is valid");
    assert!(config.auth.is_some() && config.limits.is_some());
    assert_eq!(config.services.len(), 4);
    // The example says its `server:` values are the defaults.
    assert_eq!(format!("{:?}", config.server), format!("{:?}", dragoman::config::ServerLimits::default()));
    assert_eq!(config.services[1].queue_timeout, std::time::Duration::from_secs(1));
    assert_eq!(config.services[1].backends.iter().map(|b| b.weight).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(config.services[2].hash_on.as_ref().map(|h| h.as_str()), Some("x-session-id"));
    assert!(config.services[3].tls.is_some());
    assert_eq!(config.tls.as_ref().map(|t| t.listen.port()), Some(8443));
    assert_eq!(config.traces.otlp_endpoint.as_ref().map(|e| e.to_string()).as_deref(), Some("http://127.0.0.1:4317/"));
    assert_eq!(config.rule_for("shop.products.v1.ProductService").map(|r| r.index), Some(0));
    assert_eq!(config.rule_for("shop.orders.v1.OrderService").map(|r| r.index), Some(1));
}
