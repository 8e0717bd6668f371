use std::sync::LazyLock;

use proptest::prelude::*;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage};

use super::*;
use crate::transcode::generate::{Text, any_demo_message, demo_messages};

/// tests/proto/conformance.proto: a message with every kind of field (`Kinds`).
static CONFORMANCE: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = crate::catalog::compile_set(
        &[root.join("tests/proto/conformance.proto")],
        &[root.join("tests/proto"), root.join("proto")],
    )
    .expect("compiles");
    DescriptorPool::decode(set.as_slice()).expect("pool")
});

fn kinds() -> MessageDescriptor {
    CONFORMANCE.get_message_by_name("conformance.v1.Kinds").expect("Kinds")
}

fn from_json(descriptor: MessageDescriptor, json: &str) -> DynamicMessage {
    crate::transcode::json::decode(descriptor, json.as_bytes(), false).expect("json")
}

fn read(descriptor: MessageDescriptor, xml: &str) -> Result<DynamicMessage, String> {
    decode(descriptor, xml.as_bytes(), DecodeOptions::default()).map_err(|e| e.message)
}

#[test]
fn every_kind_of_field_round_trips_and_reads_as_documented() {
    let message = from_json(
        kinds(),
        r#"{"i32": -5, "i64": "-9223372036854775808", "u64": "18446744073709551615", "flag": true,
            "ratio": 0.25, "f": -1.5, "data": "AAEC/w==", "colour": "GREEN", "ids": ["1", "2"],
            "colours": ["RED", "GREEN"], "nested": {"a": "x<&>\r\n", "inner": {"c": 3}},
            "at": "2024-05-06T07:08:09.5Z", "wait": "-1.25s", "mask": "a.b,customName",
            "big": "7", "maybe": false, "label": "", "meta": {"k": [1, "two", null]},
            "anyValue": 3, "list": [true], "payload": {"@type": "type.googleapis.com/conformance.v1.Book", "name": "b"},
            "nothing": {}, "customName": "j", "counts": {"b": 2, "a": 1}, "s64": "-3", "f32": 4,
            "dbl": "-Infinity", "raw": "_-8="}"#,
    );
    let xml = encode(&message).expect("encodes");
    let expected = concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        "\n",
        r#"<Kinds xmlns="urn:dragoman:conformance.v1"><i32>-5</i32><i64>-9223372036854775808</i64>"#,
        "<u64>18446744073709551615</u64><flag>true</flag><ratio>0.25</ratio><f>-1.5</f><data>AAEC/w==</data>",
        "<colour>GREEN</colour><ids>1</ids><ids>2</ids><colours>RED</colours><colours>GREEN</colours>",
        "<nested><a>x&lt;&amp;&gt;&#13;\n</a><inner><c>3</c></inner></nested><at>2024-05-06T07:08:09.500Z</at>",
        "<wait>-PT1.25S</wait><mask>a.b,customName</mask><big>7</big><maybe>false</maybe><label></label>",
        r#"<meta>{"k":[1.0,"two",null]}</meta><anyValue>3.0</anyValue><list>[true]</list>"#,
        r#"<payload>{"@type":"type.googleapis.com/conformance.v1.Book","name":"b"}</payload>"#,
        r#"<d:nothing xmlns:d="urn:dragoman:conformance.v1" xmlns="urn:dragoman:google.protobuf"></d:nothing>"#,
        "<customName>j</customName><counts><key>a</key><value>1</value></counts>",
        "<counts><key>b</key><value>2</value></counts><s64>-3</s64><f32>4</f32><dbl>-INF</dbl><raw>/+8=</raw></Kinds>",
    );
    assert_eq!(xml, expected);
    let back = read(kinds(), &xml).expect("decodes");
    // Maps have no order in a message: compare what the two write.
    assert_eq!(encode(&back).expect("encodes"), xml);
}

#[test]
fn prefixes_are_the_clients_and_namespaces_may_be_left_out() {
    let plain = "<Kinds><i32>1</i32><nested><a>x</a></nested><customName>y</customName></Kinds>";
    let prefixed = r#"<k:Whatever xmlns:k="urn:dragoman:conformance.v1"><k:i32>1</k:i32>
        <k:nested><a>x</a></k:nested><k:json_named>y</k:json_named></k:Whatever>"#;
    let a = read(kinds(), plain).expect("plain");
    let b = read(kinds(), prefixed).expect("prefixed");
    assert_eq!(a, b);
    let wrong = r#"<Kinds xmlns:o="urn:other"><o:i32>1</o:i32></Kinds>"#;
    let error = read(kinds(), wrong).expect_err("another namespace");
    assert!(error.contains("no field <i32> in namespace \"urn:other\""), "{error}");
}

#[test]
fn absent_empty_and_nil() {
    let message = read(kinds(), r#"<Kinds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><label/><big xsi:nil="true"/><nested/></Kinds>"#)
        .expect("decodes");
    let field = |name: &str| kinds().get_field_by_name(name).expect("field");
    assert!(message.has_field(&field("label")), "empty sets the field");
    assert!(!message.has_field(&field("big")), "nil leaves it unset");
    assert!(message.has_field(&field("nested")), "an empty message is a message");
    assert!(!message.has_field(&field("at")), "absent is unset");
}

#[test]
fn errors_say_what_and_where() {
    let cases = [
        ("<Kinds><i32>x</i32></Kinds>", "expected a 32-bit integer, got \"x\" (at /Kinds/i32)"),
        ("<Kinds><i32>2147483648</i32></Kinds>", "out of range for a 32-bit integer"),
        ("<Kinds><u64>-1</u64></Kinds>", "out of range for an unsigned 64-bit integer"),
        ("<Kinds><colour>BLUE</colour></Kinds>", "\"BLUE\" is not a value of conformance.v1.Colour"),
        ("<Kinds><nested><b/></nested></Kinds>", "conformance.v1.Kinds.Nested has no field <b> (at /Kinds/nested/b)"),
        ("<Kinds><i32>1</i32><i32>2</i32></Kinds>", "the field i32 is given twice"),
        ("<Kinds><i32>0</i32><i32>2</i32></Kinds>", "the field i32 is given twice"),
        ("<Kinds><nested><a>\u{1}</a></nested></Kinds>", "U+0001, which XML 1.0 does not allow"),
        ("<Kinds i32=\"1\" i32=\"2\"/>", "malformed attribute"),
        ("<Kinds><flag>yes</flag></Kinds>", "expected true or false"),
        ("<Kinds><data>***</data></Kinds>", "expected base64"),
        ("<Kinds><wait>P1M</wait></Kinds>", "years and months have no fixed length"),
        ("<Kinds><at>yesterday</at></Kinds>", "not a valid google.protobuf.Timestamp"),
        ("<Kinds><ratio>inf</ratio></Kinds>", "expected a number"),
        ("<Kinds>text</Kinds>", "text \"text\" inside conformance.v1.Kinds"),
        ("<Kinds><i32><x/></i32></Kinds>", "element <x> where only text is expected"),
        ("<Kinds><i32>1</i32>", "the document ends inside an element"),
        ("<Kinds><i32>1</i33></Kinds>", "malformed XML"),
        ("<Kinds/><Kinds/>", "content after the document's root element"),
        ("", "the document has no root element"),
        ("<Kinds><p:i32>1</p:i32></Kinds>", "the namespace prefix \"p\" is not declared"),
        ("<Kinds><nested><a>&nbsp;</a></nested></Kinds>", "the entity &nbsp; is not defined"),
        ("<Kinds><nested><a>&#1;</a></nested></Kinds>", "U+0001, which XML 1.0 does not allow"),
        (r#"<?xml version="1.0" encoding="ISO-8859-1"?><Kinds/>"#, "only UTF-8 is read"),
    ];
    for (xml, expected) in cases {
        let error = read(kinds(), xml).expect_err(xml);
        assert!(error.contains(expected), "{xml}: {error}");
    }
    let ignoring = DecodeOptions { ignore_unknown_fields: true };
    let message = decode(kinds(), b"<Kinds><zzz><i32>5</i32></zzz><i32>1</i32></Kinds>", ignoring).expect("skips");
    assert_eq!(message.get_field_by_name("i32").and_then(|v| v.as_i32()), Some(1));
}

#[test]
fn oneof_members_exclude_each_other_and_are_written_where_the_schema_says() {
    let pool = DescriptorPool::decode(crate::demo::DESCRIPTOR_SET).expect("demo");
    let action = pool.get_message_by_name("shop.orders.v1.CartAction").expect("CartAction");
    let names: Vec<String> =
        action.oneofs().flat_map(|o| o.fields().map(|f| f.json_name().to_owned()).collect::<Vec<_>>()).collect();
    assert!(names.len() >= 2, "{names:?}");
    let both = format!("<CartAction><{0}/><{1}/></CartAction>", names[0], names[1]);
    let error = read(action.clone(), &both).expect_err("two members");
    assert!(error.contains("members of oneof"), "{error}");
}

#[test]
fn dtds_entities_and_oversized_documents_are_refused() {
    let attacks = [
        // XXE: an external entity.
        r#"<?xml version="1.0"?><!DOCTYPE k [<!ENTITY x SYSTEM "file:///etc/passwd">]><Kinds><a>&x;</a></Kinds>"#,
        // Billion laughs.
        r#"<!DOCTYPE k [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><Kinds>&b;</Kinds>"#,
        r#"<!DOCTYPE Kinds SYSTEM "http://example.com/k.dtd"><Kinds/>"#,
    ];
    for xml in attacks {
        let error = read(kinds(), xml).expect_err(xml);
        assert!(error.contains("document type declaration (DTD) is not accepted"), "{error}");
    }
    let many: String = (0..10_000).map(|n| format!(" xmlns:p{n}=\"urn:{n}\"")).collect();
    let error = read(kinds(), &format!("<Kinds{many}><i32>1</i32></Kinds>")).expect_err("attributes");
    assert!(error.contains("more than 32 attributes"), "{error}");
    let long = "n".repeat(2000);
    let error = read(kinds(), &format!("<{long}/>")).expect_err("long name");
    assert!(error.contains("an element name longer than 1024 bytes"), "{error}");
    let tree = CONFORMANCE.get_message_by_name("conformance.v1.Tree").expect("Tree");
    let deep = format!("{}{}", "<child>".repeat(70), "</child>".repeat(70));
    let error = read(tree, &format!("<Tree>{deep}</Tree>")).expect_err("deep");
    assert!(error.contains("nest deeper than 64"), "{error}");
}

#[test]
fn line_ends_are_read_as_xml_says() {
    let message = read(kinds(), "<Kinds><nested><a>1\r\n2\r3&#13;</a></nested></Kinds>").expect("decodes");
    let nested = message.get_field_by_name("nested").and_then(|v| v.as_message().cloned()).expect("nested");
    assert_eq!(nested.get_field_by_name("a").and_then(|v| v.as_str().map(str::to_owned)).as_deref(), Some("1\n2\n3\r"));
}

#[test]
fn a_patch_mask_names_the_elements_given() {
    let xml =
        b"<K><i32>1</i32><nested><inner><c>1</c></inner></nested><ids>1</ids><ids>2</ids><at>2024-01-01T00:00:00Z</at>\
        <counts><key>a</key><value>1</value></counts><zzz/><customName>x</customName></K>";
    let paths = field_mask_paths(&kinds(), xml).expect("paths");
    assert_eq!(paths, ["i32", "nested.inner.c", "ids", "at", "counts", "json_named"]);
}

#[test]
fn a_patch_mask_skips_elements_of_other_namespaces() {
    let xml = br#"<K xmlns:o="urn:other"><o:i32>1</o:i32><flag>true</flag></K>"#;
    assert_eq!(field_mask_paths(&kinds(), xml).expect("paths"), ["flag"]);
}

#[test]
fn a_well_known_type_at_the_root_round_trips() {
    let pool = CONFORMANCE.clone();
    for (name, json) in
        [("google.protobuf.Struct", r#"{"a": [1, "b"]}"#), ("google.protobuf.Timestamp", r#""2024-01-01T00:00:00Z""#)]
    {
        let descriptor = pool.get_message_by_name(name).expect("type");
        let message = from_json(descriptor.clone(), json);
        let xml = encode(&message).expect("encodes");
        assert_eq!(read(descriptor, &xml).expect("decodes"), message, "{xml}");
    }
}

#[test]
fn a_body_field_given_twice_is_refused_even_at_its_default() {
    let mut message = DynamicMessage::new(kinds());
    let field = kinds().get_field_by_name("i32").expect("field");
    let error = decode_body(&mut message, &field, b"<x><i32>0</i32><i32>5</i32></x>", DecodeOptions::default())
        .expect_err("twice");
    assert!(error.message.contains("given twice"), "{}", error.message);
}

#[test]
fn durations_a_backend_should_not_send_have_no_xml_form() {
    let wait = kinds().get_field_by_name("wait").expect("wait");
    let prost_reflect::Kind::Message(duration) = wait.kind() else { panic!("a message") };
    let mut bad = DynamicMessage::new(duration);
    bad.set_field_by_name("seconds", prost_reflect::Value::I64(1));
    bad.set_field_by_name("nanos", prost_reflect::Value::I32(-5));
    let mut message = DynamicMessage::new(kinds());
    message.set_field(&wait, prost_reflect::Value::Message(bad));
    let error = encode(&message).expect_err("mixed signs");
    assert!(error.message.contains("has no XML form"), "{}", error.message);
}

#[test]
fn strings_xml_cannot_carry_are_an_error_not_broken_xml() {
    let mut message = DynamicMessage::new(kinds());
    message.set_field_by_name("json_named", prost_reflect::Value::String("a\u{1}b".into()));
    let error = encode(&message).expect_err("U+0001");
    assert!(error.message.contains("U+0001"), "{}", error.message);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_then_decode_is_the_identity(message in any_demo_message(Text::Xml)) {
        let xml = encode(&message).map_err(|e| TestCaseError::fail(e.message))?;
        let decoded = decode(message.descriptor(), xml.as_bytes(), DecodeOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{}: {xml}", e.message)))?;
        prop_assert_eq!(decoded.encode_to_vec(), message.encode_to_vec(), "{}", xml);
    }

    #[test]
    fn any_text_decodes_or_errs_and_what_decodes_round_trips(
        (descriptor, body) in prop::sample::select(demo_messages()).prop_flat_map(|d| (Just(d.clone()), xml_body(d))),
    ) {
        if let Ok(message) = decode(descriptor.clone(), body.as_bytes(), DecodeOptions::default()) {
            if let Ok(xml) = encode(&message) {
                let again = decode(descriptor, xml.as_bytes(), DecodeOptions::default())
                    .map_err(|e| TestCaseError::fail(format!("{}: {xml}", e.message)))?;
                prop_assert_eq!(again.encode_to_vec(), message.encode_to_vec());
            }
        }
    }
}

/// Documents of a type's element names (its own, and its fields' types') and values that mean
/// something to some field, cut short sometimes.
fn xml_body(descriptor: MessageDescriptor) -> impl Strategy<Value = String> {
    let mut names: Vec<String> = descriptor.fields().map(|f| f.json_name().to_owned()).collect();
    for field in descriptor.fields() {
        if let prost_reflect::Kind::Message(m) = field.kind() {
            names.extend(m.fields().map(|f| f.json_name().to_owned()));
        }
    }
    names.push("unknown".to_owned());
    let text = prop::sample::select(vec![
        "1",
        "-1",
        "x",
        "",
        "ORDER_STATUS_PAID",
        "2024-01-01T00:00:00Z",
        "PT1S",
        "&amp;",
        "<![CDATA[<]]>",
        "&#x41;",
    ]);
    let leaf = text.prop_map(str::to_owned);
    let tree = leaf.prop_recursive(3, 24, 4, move |inner| {
        (prop::sample::select(names.clone()), prop::collection::vec(inner, 0..4))
            .prop_map(|(name, children)| format!("<{name}>{}</{name}>", children.concat()))
    });
    (prop::collection::vec(tree, 0..4), any::<prop::sample::Index>(), any::<bool>()).prop_map(
        |(children, cut, short)| {
            let document = format!("<Root>{}</Root>", children.concat());
            if short { document[..cut.index(document.len() + 1)].to_owned() } else { document }
        },
    )
}
