//! Merges the file descriptors of every loaded file into one `DescriptorPool`.
//!
//! The same file may arrive from several sets (every set compiled with its imports carries
//! `google/protobuf/timestamp.proto`): identical copies are kept once. Two different files of one
//! name, or one symbol defined in two files, is an error naming both origins — silently keeping
//! either would route calls by whichever file happened to load first.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use prost_reflect::DescriptorPool;
use prost_types::{DescriptorProto, FileDescriptorProto};

use super::CatalogError;
use super::load::{RawSet, Sourced, split_set, well_known};
use prost::Message;

pub(super) fn merge(files: Vec<Sourced>) -> Result<DescriptorPool, CatalogError> {
    let mut by_name: BTreeMap<String, Sourced> = BTreeMap::new();
    for file in files {
        let name = file.proto.name().to_owned();
        match by_name.get(&name) {
            None => {
                by_name.insert(name, file);
            }
            Some(kept) if same_definitions(&kept.proto, &file.proto) => {}
            Some(kept) => {
                return Err(CatalogError::Conflict(format!(
                    "{name} is defined differently in {} and in {}",
                    kept.origin.display(),
                    file.origin.display()
                )));
            }
        }
    }
    add_missing_well_known(&mut by_name);
    add_google_rpc(&mut by_name);

    let mut symbols: HashMap<String, &Sourced> = HashMap::new();
    for file in by_name.values() {
        for symbol in file_symbols(&file.proto) {
            if let Some(other) = symbols.insert(symbol.clone(), file) {
                return Err(CatalogError::Conflict(format!(
                    "{symbol} is defined twice: in {} ({}) and in {} ({})",
                    other.proto.name(),
                    other.origin.display(),
                    file.proto.name(),
                    file.origin.display()
                )));
            }
        }
    }

    let mut pool = DescriptorPool::new();
    let origins: HashMap<String, PathBuf> =
        by_name.values().map(|f| (f.proto.name().to_owned(), f.origin.clone())).collect();
    let set = RawSet { file: by_name.into_values().map(|f| f.raw).collect() };
    pool.decode_file_descriptor_set(set.encode_to_vec().as_slice()).map_err(|e| {
        let origin =
            e.file().and_then(|name| origins.get(name)).map(|p| format!("{}: ", p.display())).unwrap_or_default();
        CatalogError::Conflict(format!("{origin}{e}"))
    })?;
    Ok(pool)
}

/// Two copies of a file define the same things when they match without their comments and
/// source positions. protobuf's own files are taken as given: compilers differ in the options
/// they record for them, never in what they define.
fn same_definitions(a: &FileDescriptorProto, b: &FileDescriptorProto) -> bool {
    if a.package() == "google.protobuf" {
        return true;
    }
    let strip = |f: &FileDescriptorProto| FileDescriptorProto { source_code_info: None, ..f.clone() };
    strip(a) == strip(b)
}

/// Sets compiled without `--include_imports` lack protobuf's well-known files; supply them.
fn add_missing_well_known(files: &mut BTreeMap<String, Sourced>) {
    let missing: Vec<(String, PathBuf)> = files
        .values()
        .flat_map(|f| f.proto.dependency.iter().map(move |d| (d.clone(), f.origin.clone())))
        .filter(|(d, _)| d.starts_with("google/protobuf/") && !files.contains_key(d))
        .collect();
    for (name, origin) in missing {
        for file in well_known(&name, &origin).unwrap_or_default() {
            files.entry(file.proto.name().to_owned()).or_insert(file);
        }
    }
}

/// googleapis' google/rpc files (status, code, error details), compiled by build.rs.
const GOOGLE_RPC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc.binpb"));

/// Adds googleapis' google/rpc files, so that the standard error details (`ErrorInfo`,
/// `RetryInfo`, `BadRequest`...) a backend sends render as JSON whatever the loaded sets import,
/// as protobuf's well-known types do. A loaded file of the same name, or one defining any of the
/// same symbols, wins: ours is then left out.
fn add_google_rpc(files: &mut BTreeMap<String, Sourced>) {
    let Ok(builtin) = split_set(GOOGLE_RPC, std::path::Path::new("(built in)")) else { return };
    let defined: std::collections::HashSet<String> = files.values().flat_map(|f| file_symbols(&f.proto)).collect();
    for file in builtin {
        let name = file.proto.name().to_owned();
        if files.contains_key(&name) || file_symbols(&file.proto).iter().any(|s| defined.contains(s)) {
            continue;
        }
        files.insert(name, file);
    }
}

/// The fully-qualified names a file defines.
fn file_symbols(file: &FileDescriptorProto) -> Vec<String> {
    let package = file.package();
    let qualify = |name: &str| {
        if package.is_empty() { name.to_owned() } else { format!("{package}.{name}") }
    };
    let mut out = Vec::new();
    for message in &file.message_type {
        message_symbols(&qualify(message.name()), message, &mut out);
    }
    out.extend(file.enum_type.iter().map(|e| qualify(e.name())));
    out.extend(file.service.iter().map(|s| qualify(s.name())));
    out.extend(file.extension.iter().map(|x| qualify(x.name())));
    out
}

fn message_symbols(name: &str, message: &DescriptorProto, out: &mut Vec<String>) {
    out.push(name.to_owned());
    for nested in &message.nested_type {
        message_symbols(&format!("{name}.{}", nested.name()), nested, out);
    }
    out.extend(message.enum_type.iter().map(|e| format!("{name}.{}", e.name())));
    out.extend(message.extension.iter().map(|x| format!("{name}.{}", x.name())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::DescriptorProto;

    fn file(name: &str, messages: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some("demo".into()),
            syntax: Some("proto3".into()),
            message_type: messages
                .iter()
                .map(|m| DescriptorProto { name: Some((*m).into()), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn sourced(origin: &str, proto: FileDescriptorProto) -> Sourced {
        Sourced { origin: origin.into(), raw: proto.encode_to_vec().into(), proto }
    }

    #[test]
    fn identical_copies_merge_once() {
        let pool =
            merge(vec![sourced("a.binpb", file("x.proto", &["A"])), sourced("b.binpb", file("x.proto", &["A"]))])
                .expect("same file twice is fine");
        assert!(pool.get_message_by_name("demo.A").is_some());
    }

    #[test]
    fn one_name_two_contents_names_both_origins() {
        let err = merge(vec![sourced("a.binpb", file("x.proto", &["A"])), sourced("b.binpb", file("x.proto", &["B"]))])
            .expect_err("different contents");
        let message = err.to_string();
        assert!(message.contains("x.proto") && message.contains("a.binpb") && message.contains("b.binpb"), "{message}");
    }

    #[test]
    fn one_symbol_two_files_names_both() {
        let err = merge(vec![sourced("a.binpb", file("x.proto", &["A"])), sourced("b.binpb", file("y.proto", &["A"]))])
            .expect_err("symbol twice");
        let message = err.to_string();
        assert!(message.contains("demo.A") && message.contains("a.binpb") && message.contains("b.binpb"), "{message}");
    }

    #[test]
    fn missing_well_known_imports_are_supplied() {
        let mut f = file("x.proto", &[]);
        f.dependency.push("google/protobuf/timestamp.proto".into());
        let pool = merge(vec![sourced("a.binpb", f)]).expect("timestamp.proto comes from protox");
        assert!(pool.get_message_by_name("google.protobuf.Timestamp").is_some());
    }
}
