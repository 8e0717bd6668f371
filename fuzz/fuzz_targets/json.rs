//! JSON bodies into messages of the demo types: the first byte chooses the message type, the
//! second a field for `decode_into_field` (`body: "field"`); the rest is the body. What decodes
//! must print as JSON that decodes to the same message, and a body taken into a field must be one
//! JSON value.

#![no_main]

use std::sync::LazyLock;

use dragoman::transcode::json::{PrintOptions, decode, decode_into_field, encode, encode_field};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage};

static MESSAGES: LazyLock<Vec<MessageDescriptor>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(dragoman::demo::DESCRIPTOR_SET).expect("demo set");
    pool.all_messages().filter(|m| m.full_name().starts_with("shop.")).collect()
});

fuzz_target!(|data: &[u8]| {
    let [which, field, body @ ..] = data else { return };
    let descriptor = MESSAGES[usize::from(*which) % MESSAGES.len()].clone();
    let ignore_unknown = which & 0x80 != 0;
    if let Ok(message) = decode(descriptor.clone(), body, ignore_unknown) {
        let json = encode(&message, &PrintOptions::default()).expect("what decodes has a JSON form");
        let again = decode(descriptor.clone(), &json, false).expect("printed JSON decodes");
        assert_eq!(again.encode_to_vec(), message.encode_to_vec());
    }
    let fields: Vec<_> = descriptor.fields().collect();
    if fields.is_empty() {
        return;
    }
    let field = &fields[usize::from(*field) % fields.len()];
    let mut message = DynamicMessage::new(descriptor);
    if decode_into_field(&mut message, field, body, ignore_unknown).is_ok() {
        // The body is the field's value: one JSON document, not a value and more fields.
        // (IgnoredAny, as an unknown field's value is read: a Value would refuse 1e400.)
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(), "not one JSON value");
        let json = encode_field(&message, field, &PrintOptions::default()).expect("a JSON form");
        let mut again = DynamicMessage::new(message.descriptor());
        decode_into_field(&mut again, field, &json, false).expect("printed JSON decodes");
        assert_eq!(again.encode_to_vec(), message.encode_to_vec());
    }
});
