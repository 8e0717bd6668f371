//! The SOAP frontend over real sockets: zeep (a WSDL-driven client nobody here wrote) against the
//! generated WSDL, raw SOAP 1.1 and 1.2 envelopes as curl would send them, every fault, the XML
//! attacks, and the WSDL's schemas checked by xmllint against what the gateway sends.

mod support;

use std::process::Command;

use support::{HttpReply, TestGateway, http};

const ORDERS: &str = "/soap/shop.orders.v1.OrderService";
const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

async fn soap11(gateway: &TestGateway, path: &str, action: &str, envelope: &str) -> HttpReply {
    let headers = [("content-type", "text/xml; charset=utf-8"), ("soapaction", action)];
    http(gateway.address, "POST", path, &headers, envelope.as_bytes()).await
}

async fn soap12(gateway: &TestGateway, path: &str, action: Option<&str>, envelope: &str) -> HttpReply {
    let content_type = match action {
        Some(action) => format!("application/soap+xml; charset=utf-8; action=\"{action}\""),
        None => "application/soap+xml; charset=utf-8".to_owned(),
    };
    http(gateway.address, "POST", path, &[("content-type", &content_type)], envelope.as_bytes()).await
}

/// The text of the first element named `name` (any prefix) in `xml`.
fn text_of(xml: &str, name: &str) -> Option<String> {
    let pattern = format!(r"<(?:[\w.-]+:)?{name}(?:\s[^>]*)?>([^<]*)</(?:[\w.-]+:)?{name}>");
    let found = regex::Regex::new(&pattern).expect("regex").captures(xml)?;
    Some(found[1].to_owned())
}

/// Runs a Python script with zeep, the gateway's URL as its argument; its last line must be `ok`.
fn zeep(script: &str, url: &str) -> String {
    let output = Command::new(support::zeep_python()).arg("-c").arg(script).arg(url).output().expect("python runs");
    let (out, err) = (support::stdout(&output), support::stderr(&output));
    assert!(output.status.success() && out.trim_end().ends_with("ok"), "zeep failed:\n{out}\n{err}");
    out
}

const ZEEP_DEMO: &str = r#"
import datetime, sys, zeep
from zeep.exceptions import Fault
url = sys.argv[1]
client = zeep.Client(url + "/soap/shop.orders.v1.OrderService?wsdl")
orders = client.service
order = orders.CreateOrder(userId="u-1", items=[{"productId": "p-1", "quantity": 2}, {"productId": "p-2", "quantity": 1}])
assert order.userId == "u-1", order
assert [(i.productId, i.quantity) for i in order["items"]] == [("p-1", 2), ("p-2", 1)], order
assert order["items"][0].unitPrice.currencyCode == "EUR" and order["items"][0].unitPrice.units == 24
assert order.status == "ORDER_STATUS_PLACED", order.status
assert isinstance(order.createTime, datetime.datetime) and order.createTime.tzinfo is not None, order.createTime
# 2 x 24.99 + 4.99: int64 units and int32 nanos.
assert (order.total.units, order.total.nanos) == (54, 970000000), order.total
again = orders.GetOrder(id=order.id)
assert again.id == order.id and again.createTime == order.createTime, again
# A client stream: its messages as <message> elements.
more = orders.AddLineItems(message=[
    {"orderId": order.id, "item": {"productId": "p-3", "quantity": 1}},
    {"orderId": order.id, "item": {"productId": "p-1", "quantity": 1}},
])
assert [i.productId for i in more["items"]] == ["p-1", "p-2", "p-3", "p-1"], more
# A server stream, collected: the watch ends at delivery.
events = orders.WatchOrder(id=order.id, interval=datetime.timedelta(milliseconds=10))
assert [e.status for e in events][-1] == "ORDER_STATUS_DELIVERED", events
assert all(e.orderId == order.id for e in events)
# A bidirectional stream, half-duplex; a oneof.
carts = orders.LiveCart(message=[{"add": {"productId": "p-2", "quantity": 3}}, {"clear": True}])
assert [c.revision for c in carts] == [1, 2] and carts[1]["items"] == [], carts
try:
    orders.GetOrder(id="o-missing")
    raise AssertionError("no fault")
except Fault as fault:
    assert fault.code.endswith("Client"), fault.code
    assert 'no order with id "o-missing"' in fault.message, fault.message
    status = fault.detail.find("{urn:dragoman:grpc}status")
    assert status.findtext("{urn:dragoman:grpc}name") == "NOT_FOUND", zeep.helpers.serialize_object(fault.detail)
    assert status.findtext("{urn:dragoman:grpc}code") == "5"
# The SOAP 1.2 binding of the same WSDL.
soap12 = client.bind("OrderService", "OrderServiceSoap12")
assert soap12.GetOrder(id=order.id).id == order.id
try:
    soap12.GetOrder(id="o-missing")
    raise AssertionError("no fault")
except Fault as fault:
    assert fault.code.endswith("Sender"), fault.code
    assert [s.localname for s in fault.subcodes] == ["NOT_FOUND"], fault.subcodes
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_calls_the_demo_through_its_generated_wsdl() {
    let gateway = TestGateway::start().await;
    let url = gateway.url();
    tokio::task::spawn_blocking(move || zeep(ZEEP_DEMO, &url)).await.expect("zeep");
}

const ZEEP_KINDS: &str = r#"
import datetime, sys, zeep
url = sys.argv[1]
client = zeep.Client(url + "/soap/conformance.v1.Messaging?wsdl")
at = datetime.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=datetime.timezone.utc)
sent = dict(
    i32=-5, i64=-9223372036854775808, u64=18446744073709551615, flag=True, ratio=0.25, f=-1.5,
    data=b"\x00\x01\xfe\xff", colour="GREEN", ids=[1, -2, 3], colours=["RED", "GREEN"],
    nested={"a": "x < & > y", "inner": {"c": 3}}, at=at, wait=datetime.timedelta(seconds=1, milliseconds=250),
    mask="a.b,customName", big=7, maybe=False, label="L", meta='{"k":[1,"two"]}', customName="j",
    counts=[{"key": "a", "value": 1}, {"key": "b", "value": 2}], s64=-3, f32=4, dbl=2.5, raw=b"\xff",
)
got = client.service.GetKinds(**sent)
for key, value in sent.items():
    if key == "counts":
        assert [(e.key, e.value) for e in got.counts] == [("a", 1), ("b", 2)], got.counts
    elif key == "nested":
        assert got.nested.a == "x < & > y" and got.nested.inner.c == 3, got.nested
    elif key == "meta":
        assert got.meta.replace(" ", "") == '{"k":[1.0,"two"]}', got.meta
    else:
        assert got[key] == value, (key, got[key], value)
# Messages left unset come back as nothing.
assert got.payload is None and got.anyValue is None and got.list is None, got
print("ok")
"#;

/// The conformance service (every kind of field) behind a mirror: what zeep sends comes back.
async fn conformance() -> TestGateway {
    support::mirrored("conformance", "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_round_trips_every_kind_of_field() {
    let gateway = conformance().await;
    let url = gateway.url();
    tokio::task::spawn_blocking(move || zeep(ZEEP_KINDS, &url)).await.expect("zeep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_envelopes_with_any_prefixes_headers_and_actions() {
    let gateway = TestGateway::start().await;
    // SOAP 1.1, odd prefixes, an XML declaration, a comment, a header block nobody must
    // understand, the operation found by the body (empty action).
    let envelope = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
        <!-- a client's comment -->
        <Q:Envelope xmlns:Q="{SOAP11}"><Q:Header><t:Trace xmlns:t="urn:trace">abc</t:Trace></Q:Header>
          <Q:Body><zz:GetProduct xmlns:zz="urn:dragoman:shop.products.v1"><zz:id>p-1</zz:id></zz:GetProduct></Q:Body>
        </Q:Envelope>"#
    );
    let reply = soap11(&gateway, "/soap/shop.products.v1.ProductService", "\"\"", &envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/xml; charset=utf-8"));
    let body = reply.text();
    assert!(body.contains(&format!("<env:Envelope xmlns:env=\"{SOAP11}\">")), "{body}");
    assert!(body.contains("<GetProductResponse xmlns=\"urn:dragoman:shop.products.v1\"><id>p-1</id>"), "{body}");
    assert_eq!(text_of(&body, "name").as_deref(), Some("The Analytical Engine"));
    // SOAP 1.2, the action in the content type, a default namespace on the operation, no
    // namespace on its fields.
    let envelope = format!(
        r#"<e:Envelope xmlns:e="{SOAP12}"><e:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1"><id xmlns="">o-1</id></GetOrder></e:Body></e:Envelope>"#
    );
    let reply = soap12(&gateway, ORDERS, Some("urn:dragoman:shop.orders.v1.OrderService/GetOrder"), &envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/soap+xml; charset=utf-8"));
    assert_eq!(text_of(&reply.text(), "id").as_deref(), Some("o-1"));
    // A header block for another actor is not the gateway's to understand.
    let envelope = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Header><w:Security xmlns:w="urn:wss" s:mustUnderstand="1" s:actor="urn:some-other-node"/></s:Header><s:Body><o:GetOrder xmlns:o="urn:dragoman:shop.orders.v1"><o:id>o-1</o:id></o:GetOrder></s:Body></s:Envelope>"#
    );
    assert_eq!(soap11(&gateway, ORDERS, "", &envelope).await.status, 200);
    // The action may also be the gRPC path or the bare method name.
    let envelope11 = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><o:GetOrder xmlns:o="urn:dragoman:shop.orders.v1"><o:id>o-1</o:id></o:GetOrder></s:Body></s:Envelope>"#
    );
    for action in [
        "\"/shop.orders.v1.OrderService/GetOrder\"",
        "GetOrder",
        "\"urn:dragoman:shop.orders.v1.OrderService/GetOrder\"",
    ] {
        let reply = soap11(&gateway, ORDERS, action, &envelope11).await;
        assert_eq!(reply.status, 200, "{action}: {}", reply.text());
    }
    // Client metadata reaches the backend as it does for REST: a deadline header bounds the call.
    let watch = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><WatchOrder xmlns="urn:dragoman:shop.orders.v1"><id>o-1</id><interval>PT60S</interval></WatchOrder></s:Body></s:Envelope>"#
    );
    let headers = [("content-type", "text/xml"), ("soapaction", ""), ("grpc-timeout", "200m")];
    let started = std::time::Instant::now();
    let reply = http(gateway.address, "POST", ORDERS, &headers, watch.as_bytes()).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the client's deadline, not soap.stream_timeout (30s)"
    );
    assert_eq!(reply.status, 500);
    assert_eq!(text_of(&reply.text(), "name").as_deref(), Some("DEADLINE_EXCEEDED"), "{}", reply.text());
}

/// One request that must fail: the HTTP status, the fault code, and words the message must hold.
struct FaultCase {
    version: u8,
    action: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
    says: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_says_what_is_wrong_and_the_gateway_keeps_serving() {
    let gateway = TestGateway::start().await;
    let get_order = |version: u8, inner: &str| {
        let env = if version == 11 { SOAP11 } else { SOAP12 };
        format!(
            r#"<s:Envelope xmlns:s="{env}"><s:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1">{inner}</GetOrder></s:Body></s:Envelope>"#
        )
    };
    let case =
        |version, action, body: String, status, code, says| FaultCase { version, action, body, status, code, says };
    let cases = vec![
        case(
            11,
            None,
            "<s:Envelope xmlns:s=\"x\"><unclosed>".into(),
            500,
            "VersionMismatch",
            "the envelope's namespace is \"x\"",
        ),
        case(11, None, "<Envelope><Body/></Envelope>".into(), 500, "Client", "not a SOAP Envelope"),
        case(
            11,
            None,
            format!("<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body><GetOrder><id>1</GetOrder>"),
            500,
            "Client",
            "malformed XML",
        ),
        case(11, None, String::new(), 500, "Client", "expected a SOAP Envelope"),
        case(11, None, get_order(12, "<id>o-1</id>"), 500, "VersionMismatch", "of the other SOAP version"),
        case(12, None, get_order(11, "<id>o-1</id>"), 500, "VersionMismatch", "of the other SOAP version"),
        case(
            11,
            None,
            format!(
                "<s:Envelope xmlns:s=\"{SOAP11}\"><s:Header><w:Security xmlns:w=\"urn:wss\" s:mustUnderstand=\"1\"/></s:Header><s:Body/></s:Envelope>"
            ),
            500,
            "MustUnderstand",
            "{urn:wss}Security must be understood",
        ),
        case(
            12,
            None,
            format!(
                "<s:Envelope xmlns:s=\"{SOAP12}\"><s:Header><w:Security xmlns:w=\"urn:wss\" s:mustUnderstand=\"true\"/></s:Header><s:Body/></s:Envelope>"
            ),
            500,
            "MustUnderstand",
            "must be understood",
        ),
        case(
            11,
            None,
            format!("<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body/></s:Envelope>"),
            500,
            "Client",
            "the Body holds no operation element",
        ),
        case(
            11,
            None,
            format!("<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body><Nope/></s:Body></s:Envelope>"),
            500,
            "Client",
            "has no operation <Nope>",
        ),
        case(12, Some("urn:nope"), get_order(12, ""), 400, "Sender", "no operation with the action \"urn:nope\""),
        case(
            11,
            Some("CreateOrder"),
            get_order(11, ""),
            500,
            "Client",
            "the action calls CreateOrder, but the Body holds <GetOrder>",
        ),
        case(11, None, get_order(11, "<id><x/></id>"), 500, "Client", "element <x> where only text is expected"),
        case(
            12,
            None,
            get_order(12, "<title>x</title>"),
            400,
            "Sender",
            "shop.orders.v1.GetOrderRequest has no field <title>",
        ),
        case(
            12,
            None,
            format!(
                r#"<s:Envelope xmlns:s="{SOAP12}"><s:Body><GetOrder xmlns="urn:other"><id>o-1</id></GetOrder></s:Body></s:Envelope>"#
            ),
            400,
            "Sender",
            "is in namespace \"urn:other\"",
        ),
        case(
            12,
            None,
            format!(
                r#"<s:Envelope xmlns:s="{SOAP12}"><s:Body><CreateOrder xmlns="urn:dragoman:shop.orders.v1"><items><quantity>many</quantity></items></CreateOrder></s:Body></s:Envelope>"#
            ),
            400,
            "Sender",
            "quantity: expected a 32-bit integer, got \"many\"",
        ),
        case(
            12,
            None,
            format!(
                r#"<s:Envelope xmlns:s="{SOAP12}"><s:Body><CreateOrder xmlns="urn:dragoman:shop.orders.v1"><items><quantity>9999999999</quantity></items></CreateOrder></s:Body></s:Envelope>"#
            ),
            400,
            "Sender",
            "out of range for a 32-bit integer",
        ),
        case(
            11,
            None,
            format!("{}<extra/>", get_order(11, "<id>o-1</id>")),
            500,
            "Client",
            "after the document's root element",
        ),
        case(12, None, get_order(12, "<id>o-404</id>"), 400, "Sender", "no order with id \"o-404\""),
    ];
    for FaultCase { version, action, body, status, code, says } in cases {
        let reply = if version == 11 {
            soap11(&gateway, ORDERS, action.unwrap_or(""), &body).await
        } else {
            soap12(&gateway, ORDERS, action, &body).await
        };
        let text = reply.text();
        assert_eq!(reply.status, status, "{body}\n{text}");
        if version == 11 {
            assert_eq!(text_of(&text, "faultcode").as_deref(), Some(format!("env:{code}").as_str()), "{body}\n{text}");
            assert!(text_of(&text, "faultstring").is_some_and(|s| s.contains(&says.replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;"))), "{says}: {text}");
        } else {
            assert!(text.contains(&format!("<env:Value>env:{code}</env:Value>")), "{body}\n{text}");
            assert!(
                text.contains(&says.replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")),
                "{says}: {text}"
            );
        }
        // The gateway still serves.
        let ok = soap11(&gateway, ORDERS, "", &get_order(11, "<id>o-1</id>")).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
    }
    // SOAP 1.2 faults carry the gRPC code as a subcode, and the status in their detail.
    let reply = soap12(&gateway, ORDERS, None, &get_order(12, "<id>o-404</id>")).await;
    let text = reply.text();
    assert!(
        text.contains(
            "<env:Subcode><env:Value xmlns:grpc=\"urn:dragoman:grpc\">grpc:NOT_FOUND</env:Value></env:Subcode>"
        ),
        "{text}"
    );
    assert_eq!(text_of(&text, "code").as_deref(), Some("5"));
    // Not SOAP at all, an unknown service, the wrong HTTP method.
    let reply = http(gateway.address, "POST", ORDERS, &[("content-type", "application/json")], b"{}").await;
    assert_eq!(reply.status, 415);
    assert!(reply.text().contains("send text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)"), "{}", reply.text());
    let reply = soap11(&gateway, "/soap/no.Such", "", &get_order(11, "")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("no SOAP service &quot;no.Such&quot;"), "{}", reply.text());
    let reply = http(gateway.address, "DELETE", ORDERS, &[], b"").await;
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET, HEAD, POST")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xxe_and_entity_expansion_are_refused_and_the_gateway_keeps_serving() {
    let gateway = TestGateway::start().await;
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), "TOP-SECRET").expect("write");
    let attacks = [
        format!(
            r#"<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file://{}">]><s:Envelope xmlns:s="{SOAP11}"><s:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1"><id>&x;</id></GetOrder></s:Body></s:Envelope>"#,
            secret.path().display()
        ),
        format!(
            r#"<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;"><!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">]><s:Envelope xmlns:s="{SOAP11}"><s:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1"><id>&i;</id></GetOrder></s:Body></s:Envelope>"#
        ),
        // An entity nobody declared, without a DTD.
        format!(
            r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1"><id>&x;</id></GetOrder></s:Body></s:Envelope>"#
        ),
        // Deeper than any message needs (in a header block, which is otherwise skipped).
        format!(
            r#"<s:Envelope xmlns:s="{SOAP11}"><s:Header>{}{}</s:Header><s:Body/></s:Envelope>"#,
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        ),
    ];
    let expected = [
        "(DTD) is not accepted",
        "(DTD) is not accepted",
        "the entity &amp;x; is not defined",
        "nest deeper than 64 levels",
    ];
    for (attack, says) in attacks.iter().zip(expected) {
        let reply = soap11(&gateway, ORDERS, "", attack).await;
        let text = reply.text();
        assert_eq!(reply.status, 500, "{text}");
        assert_eq!(text_of(&text, "faultcode").as_deref(), Some("env:Client"), "{text}");
        assert!(text.contains(says), "{says}: {text}");
        assert!(!text.contains("TOP-SECRET") && !text.contains("aaaa"), "{text}");
    }
    // A body over the limit is refused unread.
    let big = format!("<s:Envelope xmlns:s=\"{SOAP11}\">{}</s:Envelope>", " ".repeat(17 << 20));
    let reply = soap11(&gateway, ORDERS, "", &big).await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("larger than the limit"), "{}", reply.text());
    let envelope = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><GetOrder xmlns="urn:dragoman:shop.orders.v1"><id>o-1</id></GetOrder></s:Body></s:Envelope>"#
    );
    assert_eq!(soap11(&gateway, ORDERS, "", &envelope).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_collected_bounded_and_never_hang() {
    let gateway = TestGateway::builder().soap("  max_stream_messages: 2\n  stream_timeout: 300ms\n").start().await;
    let call = |inner: &str, operation: &str| {
        format!(
            r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><{operation} xmlns="urn:dragoman:shop.orders.v1">{inner}</{operation}></s:Body></s:Envelope>"#
        )
    };
    // Two carts fit; three do not: the call is cut off with RESOURCE_EXHAUSTED.
    let two = "<message><add><productId>p-1</productId><quantity>1</quantity></add></message><message><clear>true</clear></message>";
    let reply = soap11(&gateway, ORDERS, "", &call(two, "LiveCart")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text().matches("<message>").count(), 2, "{}", reply.text());
    let three = format!("{two}<message><clear>true</clear></message>");
    let reply = soap11(&gateway, ORDERS, "", &call(&three, "LiveCart")).await;
    assert_eq!(text_of(&reply.text(), "name").as_deref(), Some("RESOURCE_EXHAUSTED"), "{}", reply.text());
    assert!(reply.text().contains("soap.max_stream_messages"));
    // A watch that would take minutes: the stream timeout ends it with a fault.
    let started = std::time::Instant::now();
    let reply = soap11(&gateway, ORDERS, "", &call("<id>o-1</id><interval>PT60S</interval>", "WatchOrder")).await;
    assert_eq!(text_of(&reply.text(), "name").as_deref(), Some("DEADLINE_EXCEEDED"), "{}", reply.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "ended by the stream timeout (300ms)");
    // A server stream past the limit: the watch sends four events.
    let watch = call("<id>o-1</id><interval>PT0.001S</interval>", "WatchOrder");
    let reply = soap11(&gateway, ORDERS, "", &watch).await;
    assert!(reply.text().contains("the stream has more than 2 messages"), "{}", reply.text());
    // ... or past the bytes one response carries (server.max_message_size).
    let small = TestGateway::builder().server("  max_message_size: 60\n").start().await;
    let reply = soap11(&small, ORDERS, "", &watch).await;
    assert!(reply.text().contains("add up to more than 60 bytes"), "{}", reply.text());
    assert_eq!(text_of(&reply.text(), "name").as_deref(), Some("RESOURCE_EXHAUSTED"));
    // A client stream's request is bounded the same way.
    let items =
        "<message><orderId>o-1</orderId><item><productId>p-1</productId><quantity>1</quantity></item></message>";
    let reply = soap11(&gateway, ORDERS, "", &call(&items.repeat(3), "AddLineItems")).await;
    assert!(reply.text().contains("the request stream has more than 2 messages"), "{}", reply.text());
    assert_eq!(text_of(&reply.text(), "name").as_deref(), Some("RESOURCE_EXHAUSTED"));
    // A client stream's items are <message> elements, nothing else.
    let reply = soap11(&gateway, ORDERS, "", &call("<orderId>o-1</orderId>", "AddLineItems")).await;
    assert!(
        reply.text().contains("holds the stream's &lt;message&gt; elements, not &lt;orderId&gt;"),
        "{}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_and_the_wsdl_address() {
    let gateway = TestGateway::start().await;
    let listing = http(gateway.address, "GET", "/soap/", &[], b"").await;
    assert_eq!(listing.status, 200);
    assert_eq!(listing.header("content-type"), Some("text/html; charset=utf-8"));
    let page = listing.text();
    for service in dragoman::demo::SERVICES {
        assert!(page.contains(&format!("<a href=\"/soap/{service}?wsdl\">{service}</a>")), "{page}");
    }
    assert!(page.contains("WatchOrder (server stream)"), "{page}");
    // The address is the host the client asked for.
    let wsdl = http(gateway.address, "GET", &format!("{ORDERS}?wsdl"), &[("host", "soap.example.com:8443")], b"").await;
    assert_eq!(wsdl.header("content-type"), Some("text/xml; charset=utf-8"));
    assert!(
        wsdl.text()
            .contains("<soap:address location=\"http://soap.example.com:8443/soap/shop.orders.v1.OrderService\"/>")
    );
    assert!(
        wsdl.text()
            .contains("<soap12:address location=\"http://soap.example.com:8443/soap/shop.orders.v1.OrderService\"/>")
    );
    // A host that is not one does not reach the document.
    let wsdl = http(gateway.address, "GET", &format!("{ORDERS}?wsdl"), &[("host", "a\"b")], b"").await;
    assert!(wsdl.text().contains("location=\"http://localhost/soap/"), "{}", wsdl.text());
    // Proto comments are the schema's documentation.
    let wsdl = http(gateway.address, "GET", &format!("{ORDERS}?wsdl"), &[], b"").await.text();
    assert!(wsdl.contains("<xs:documentation>How many actions this cart has seen.</xs:documentation>"), "{wsdl}");
    assert!(wsdl.contains("<wsdl:documentation>Orders and carts of the demo shop"), "{wsdl}");
    // Or the configured public URL, under another prefix.
    let behind =
        TestGateway::builder().soap("  path_prefix: /legacy/\n  public_url: https://api.example.com/\n").start().await;
    let wsdl = http(behind.address, "GET", "/legacy/shop.orders.v1.OrderService?wsdl", &[], b"").await;
    assert!(
        wsdl.text().contains("location=\"https://api.example.com/legacy/shop.orders.v1.OrderService\""),
        "{}",
        wsdl.text()
    );
    assert_eq!(
        http(behind.address, "GET", &format!("{ORDERS}?wsdl"), &[], b"").await.status,
        404,
        "the old prefix is REST's"
    );
    // Or no SOAP at all.
    let off = TestGateway::builder().soap("  enabled: false\n").start().await;
    let reply = http(off.address, "GET", &format!("{ORDERS}?wsdl"), &[], b"").await;
    assert_eq!((reply.status, reply.json()["code"].as_i64()), (404, Some(5)), "REST's 404: {}", reply.text());
}

/// Every demo service's WSDL, and the conformance service's (every kind of field): well-formed,
/// its schemas compile, and requests and what the gateway sends for each kind of method validate
/// against them (xmllint, from libxml2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wsdl_schemas_validate_what_the_gateway_sends() {
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let charge = "<orderId>o-1</orderId><amount><currencyCode xmlns=\"urn:dragoman:shop.common.v1\">EUR</currencyCode>\
                  <units xmlns=\"urn:dragoman:shop.common.v1\">5</units></amount><cardToken>tok_visa</cardToken>";
    let calls: &[(&str, &str, &str)] = &[
        ("shop.orders.v1.OrderService", "GetOrder", "<id>o-1</id>"),
        ("shop.orders.v1.OrderService", "WatchOrder", "<id>o-1</id><interval>PT0.001S</interval>"),
        (
            "shop.orders.v1.OrderService",
            "LiveCart",
            "<message><add><productId>p-1</productId><quantity>2</quantity></add></message>",
        ),
        ("shop.products.v1.ProductService", "ListProducts", ""),
        ("shop.users.v1.UserService", "GetUser", "<id>u-1</id>"),
        ("shop.payments.v1.PaymentService", "Charge", charge),
    ];
    for service in &dragoman::demo::SERVICES {
        let operations: Vec<(&str, &str)> =
            calls.iter().filter(|(s, _, _)| s == service).map(|(_, o, i)| (*o, *i)).collect();
        validate(&gateway, dir.path(), service, &operations).await;
    }
    let kinds = "<i32>-5</i32><i64>-9223372036854775808</i64><u64>18446744073709551615</u64><flag>1</flag>\
        <ratio>-INF</ratio><f>1.5e3</f><data>AAEC</data><colour>GREEN</colour><ids>1</ids><ids>2</ids>\
        <nested><a>x</a><inner><c>3</c></inner></nested><at>2024-05-06T07:08:09Z</at><wait>-PT1.5S</wait>\
        <mask>a.b</mask><big>7</big><maybe xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:nil=\"true\"/>\
        <meta>{}</meta><payload>{\"@type\":\"type.googleapis.com/conformance.v1.Book\",\"name\":\"b\"}</payload>\
        <nothing/><customName>j</customName><counts><key>a</key><value>1</value></counts><dbl>NaN</dbl>";
    let conformance = conformance().await;
    validate(
        &conformance,
        dir.path(),
        "conformance.v1.Messaging",
        &[("GetKinds", kinds), ("GetTree", "<child><child/></child>")],
    )
    .await;
}

/// Checks `service`'s WSDL with xmllint, and each operation's request (`inner`, in the service's
/// namespace) and response against its schemas.
async fn validate(gateway: &TestGateway, dir: &std::path::Path, service: &str, operations: &[(&str, &str)]) {
    let wsdl = http(gateway.address, "GET", &format!("/soap/{service}?wsdl"), &[], b"").await.text();
    let wsdl_file = dir.join(format!("{service}.wsdl"));
    std::fs::write(&wsdl_file, &wsdl).expect("write");
    let lint = Command::new("xmllint").arg("--noout").arg(&wsdl_file).output().expect("xmllint runs");
    assert!(lint.status.success(), "{service}: {}", support::stderr(&lint));
    // Each embedded schema to its own file, its imports pointing at the others.
    let schemas = regex::Regex::new(r#"(?s)<xs:schema targetNamespace="([^"]+)".*?</xs:schema>"#).expect("regex");
    let found: Vec<(String, String)> =
        schemas.captures_iter(&wsdl).map(|c| (c[1].to_owned(), c[0].to_owned())).collect();
    assert!(!found.is_empty(), "{wsdl}");
    let file_of = |ns: &str| dir.join(format!("{service}-{}.xsd", ns.replace(':', "_")));
    for (ns, text) in &found {
        let mut text = text.clone();
        for (other, _) in &found {
            let import = format!("<xs:import namespace=\"{other}\"/>");
            let located = format!("<xs:import namespace=\"{other}\" schemaLocation=\"{}\"/>", file_of(other).display());
            text = text.replace(&import, &located);
        }
        std::fs::write(file_of(ns), text).expect("write schema");
    }
    let main = file_of(&found[0].0);
    let namespace = format!("urn:dragoman:{}", &service[..service.rfind('.').expect("package")]);
    let soap_body = regex::Regex::new(r"(?s)<env:Body>(.*)</env:Body>").expect("regex");
    for (operation, inner) in operations {
        let request = format!("<{operation} xmlns=\"{namespace}\">{inner}</{operation}>");
        let envelope = format!(r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body>{request}</s:Body></s:Envelope>"#);
        let reply = soap11(gateway, &format!("/soap/{service}"), "", &envelope).await;
        assert_eq!(reply.status, 200, "{operation}: {}", reply.text());
        let body = soap_body.captures(&reply.text()).expect("body")[1].to_owned();
        for (what, instance) in [("request", request), ("response", body)] {
            let file = dir.join(format!("{operation}-{what}.xml"));
            std::fs::write(&file, &instance).expect("write");
            let check =
                Command::new("xmllint").arg("--noout").arg("--schema").arg(&main).arg(&file).output().expect("xmllint");
            assert!(check.status.success(), "{operation} {what}: {}\n{instance}", support::stderr(&check));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_take_and_give_xml() {
    let gateway = TestGateway::start().await;
    let xml = [("accept", "application/xml")];
    let reply = http(gateway.address, "GET", "/v1/products/p-1", &xml, b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/xml; charset=utf-8"));
    assert!(reply.text().contains("<Product xmlns=\"urn:dragoman:shop.products.v1\"><id>p-1</id>"), "{}", reply.text());
    // An XML body gets an XML reply unless JSON is asked for.
    let body = b"<CreateOrderRequest><userId>u-7</userId><items><productId>p-2</productId><quantity>2</quantity></items></CreateOrderRequest>";
    let reply = http(gateway.address, "POST", "/v1/orders", &[("content-type", "application/xml")], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(text_of(&reply.text(), "userId").as_deref(), Some("u-7"));
    assert_eq!(text_of(&reply.text(), "status").as_deref(), Some("ORDER_STATUS_PLACED"));
    let headers = [("content-type", "text/xml"), ("accept", "application/json")];
    let reply = http(gateway.address, "POST", "/v1/orders", &headers, body).await;
    assert_eq!(reply.json()["userId"], "u-7");
    // Errors in XML: google.rpc.Status by the same mapping.
    let reply = http(gateway.address, "GET", "/v1/products/nope", &xml, b"").await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("<Status xmlns=\"urn:dragoman:google.rpc\"><code>5</code>"), "{}", reply.text());
    let reply =
        http(gateway.address, "POST", "/v1/orders", &[("content-type", "application/xml")], b"<x><userId>1</x>").await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("malformed XML"), "{}", reply.text());
    let reply =
        http(gateway.address, "POST", "/v1/orders", &[("content-type", "application/xml")], b"<!DOCTYPE x><x/>").await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("(DTD) is not accepted"), "{}", reply.text());
    // `body: "product"`: the root element is the product; `response_body: "products"`: the
    // response message's root holding only that field's elements.
    let product =
        b"<Product><name>Cog</name><price><currencyCode xmlns=\"urn:dragoman:shop.common.v1\">EUR</currencyCode>\
        <units xmlns=\"urn:dragoman:shop.common.v1\">2</units></price><tags>a</tags><tags>b</tags></Product>";
    let reply = http(gateway.address, "POST", "/v1/products", &[("content-type", "application/xml")], product).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("<name>Cog</name>") && reply.text().contains("<tags>a</tags><tags>b</tags>"),
        "{}",
        reply.text()
    );
    let reply = http(gateway.address, "GET", "/v1/categories/garden/products", &xml, b"").await;
    let text = reply.text();
    assert!(text.contains("<ListProductsResponse xmlns=\"urn:dragoman:shop.products.v1\"><products><id>"), "{text}");
    // A raw HttpBody route takes XML as its bytes, and answers in JSON.
    let reply =
        http(gateway.address, "POST", "/v1/products:import", &[("content-type", "application/xml")], b"<x/>").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "expected text/csv, got \"application/xml\"");
    // Other XML types are still refused; a browser's Accept gets JSON.
    let reply = http(gateway.address, "POST", "/v1/orders", &[("content-type", "application/atom+xml")], b"<x/>").await;
    assert_eq!(reply.status, 415);
    let browser = [("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")];
    let reply = http(gateway.address, "GET", "/v1/products/p-1", &browser, b"").await;
    assert_eq!(reply.json()["id"], "p-1");
}

/// The WSDLs and the listing are part of the catalog snapshot: a set dropped into the folder is a
/// SOAP service once the gateway reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rebuilds_the_wsdls() {
    let gateway =
        TestGateway::builder().sets(vec![("users.binpb", support::demo_set(&[support::USERS]))]).start().await;
    let wsdl = "/soap/shop.payments.v1.PaymentService?wsdl";
    assert_eq!(http(gateway.address, "GET", wsdl, &[], b"").await.status, 404);
    let generation = gateway.gateway.reloads().borrow().generation;
    std::fs::write(gateway.descriptors.join("payments.binpb"), support::demo_set(&[support::PAYMENTS])).expect("drop");
    let status = gateway.wait_reload(|s| s.generation > generation).await;
    assert!(status.last_error.is_none(), "{status:?}");
    let reply = http(gateway.address, "GET", wsdl, &[], b"").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("<wsdl:operation name=\"Charge\">"), "{}", reply.text());
    let listing = http(gateway.address, "GET", "/soap/", &[], b"").await.text();
    assert!(listing.contains("shop.payments.v1.PaymentService?wsdl") && listing.contains("UserService"), "{listing}");
}
