//! Generated messages of the demo types for property tests: what a backend might send.

use std::sync::LazyLock;

use proptest::prelude::*;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// Which strings to generate.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    /// Any Unicode.
    Any,
    /// What XML 1.0 can carry (no control characters but tab, CR and LF).
    Xml,
}

pub(crate) static POOL: LazyLock<DescriptorPool> =
    LazyLock::new(|| DescriptorPool::decode(crate::demo::DESCRIPTOR_SET).expect("demo set"));

pub(crate) fn demo_messages() -> Vec<MessageDescriptor> {
    POOL.all_messages().filter(|m| m.full_name().starts_with("shop.")).collect()
}

/// Any message of `descriptor`'s type that has a JSON form: Timestamps and Durations within
/// the range the mapping allows, finite floats; nested messages `depth` deep at most.
pub(crate) fn message(descriptor: MessageDescriptor, depth: u32, text: Text) -> BoxedStrategy<DynamicMessage> {
    let set = |descriptor: &MessageDescriptor, fields: Vec<(&str, Value)>| {
        let mut message = DynamicMessage::new(descriptor.clone());
        for (name, value) in fields {
            message.set_field_by_name(name, value);
        }
        message
    };
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            return (-62_135_596_800i64..=253_402_300_799, 0..1_000_000_000i32)
                .prop_map(move |(s, n)| set(&descriptor, vec![("seconds", Value::I64(s)), ("nanos", Value::I32(n))]))
                .boxed();
        }
        "google.protobuf.Duration" => {
            return (-315_576_000_000i64..=315_576_000_000, 0..1_000_000_000i32)
                .prop_map(move |(s, n)| {
                    // Seconds and nanos have the same sign.
                    let n = if s < 0 { -n } else { n };
                    set(&descriptor, vec![("seconds", Value::I64(s)), ("nanos", Value::I32(n))])
                })
                .boxed();
        }
        _ => {}
    }
    let fields: Vec<FieldDescriptor> = descriptor.fields().filter(|f| !f.is_map()).collect();
    let values: Vec<BoxedStrategy<Option<Value>>> = fields
        .iter()
        .map(|f| {
            let one = value(f.kind(), depth, text);
            match (one, f.is_list()) {
                (None, _) => Just(None).boxed(),
                (Some(one), false) => proptest::option::of(one).boxed(),
                (Some(one), true) => {
                    proptest::option::of(prop::collection::vec(one, 0..3).prop_map(Value::List)).boxed()
                }
            }
        })
        .collect();
    values
        .prop_map(move |values| {
            let mut message = DynamicMessage::new(descriptor.clone());
            for (field, value) in fields.iter().zip(values) {
                if let Some(value) = value {
                    message.set_field(field, value);
                }
            }
            message
        })
        .boxed()
}

/// One value of a field's kind; None for a message kind past the depth.
pub(crate) fn value(kind: Kind, depth: u32, text: Text) -> Option<BoxedStrategy<Value>> {
    use prop::num::{f32, f64};
    Some(match kind {
        Kind::Double => (f64::NORMAL | f64::SUBNORMAL | f64::ZERO).prop_map(Value::F64).boxed(),
        Kind::Float => (f32::NORMAL | f32::SUBNORMAL | f32::ZERO).prop_map(Value::F32).boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => any::<i32>().prop_map(Value::I32).boxed(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => any::<i64>().prop_map(Value::I64).boxed(),
        Kind::Uint32 | Kind::Fixed32 => any::<u32>().prop_map(Value::U32).boxed(),
        Kind::Uint64 | Kind::Fixed64 => any::<u64>().prop_map(Value::U64).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::String => match text {
            Text::Any => any::<String>().prop_map(Value::String).boxed(),
            Text::Xml => "[\\t\\n\\r\\u{20}-\\u{D7FF}\\u{E000}-\\u{FFFD}\\u{10000}-\\u{10FFFF}]{0,12}"
                .prop_map(Value::String)
                .boxed(),
        },
        Kind::Bytes => any::<Vec<u8>>().prop_map(|b| Value::Bytes(b.into())).boxed(),
        Kind::Enum(e) => {
            let named: Vec<i32> = e.values().map(|v| v.number()).collect();
            // Numbers the enum does not name are kept, and printed as numbers.
            prop_oneof![prop::sample::select(named), any::<i32>()].prop_map(Value::EnumNumber).boxed()
        }
        Kind::Message(m) if depth > 0 => message(m, depth - 1, text).prop_map(Value::Message).boxed(),
        Kind::Message(_) => return None,
    })
}

pub(crate) fn any_demo_message(text: Text) -> impl Strategy<Value = DynamicMessage> {
    prop::sample::select(demo_messages()).prop_flat_map(move |m| message(m, 3, text))
}
