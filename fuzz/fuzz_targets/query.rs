//! Query strings: split into pairs, then each pair bound by its dotted key to a fresh message, as
//! the REST frontend does. The first byte chooses the options, the second the message type (any
//! type of the demo descriptor set, recursive google ones included); the rest is the query.

#![no_main]

use std::sync::LazyLock;

use dragoman::transcode::query::{BindOptions, MAX_DEPTH, MAX_PAIRS, pairs, set_path};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

static MESSAGES: LazyLock<Vec<MessageDescriptor>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(dragoman::demo::DESCRIPTOR_SET).expect("demo set");
    pool.all_messages().collect()
});

fuzz_target!(|data: &[u8]| {
    let [flags, which, query @ ..] = data else { return };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let Ok(pairs) = pairs(query, flags & 1 != 0) else { return };
    assert!(pairs.len() <= MAX_PAIRS);
    let descriptor = MESSAGES[usize::from(*which) % MESSAGES.len()].clone();
    let mut message = DynamicMessage::new(descriptor);
    let options = BindOptions { case_insensitive_enums: flags & 2 != 0 };
    for (key, value) in &pairs {
        let path: Vec<&str> = key.split('.').collect();
        assert!(path.len() <= MAX_DEPTH);
        let _ = set_path(&mut message, &path, value, options);
    }
    // Whatever was set can go on the wire.
    let _ = message.encode_to_vec();
});
