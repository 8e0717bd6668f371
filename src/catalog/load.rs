//! Finds descriptor files under the configured paths and reads them: compiled sets
//! (`FileDescriptorSet`) are decoded, `.proto` sources are compiled with protox. Every file
//! descriptor remembers the path it came from, so merge errors can name files.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use prost_types::FileDescriptorProto;

use super::CatalogError;

/// Extensions of compiled descriptor sets.
const SET_EXTENSIONS: &[&str] = &["binpb", "pb", "protoset", "desc"];

/// A file descriptor and the file on disk it was read from.
#[derive(Debug, Clone)]
pub(super) struct Sourced {
    pub origin: PathBuf,
    /// Decoded, for names, dependencies and symbols. prost drops unknown fields, and with them
    /// custom options such as `google.api.http`...
    pub proto: FileDescriptorProto,
    /// ...so the pool is built from the encoded bytes, which keep them.
    pub raw: Bytes,
}

/// A `FileDescriptorSet` with each file left encoded.
#[derive(Clone, PartialEq, Message)]
pub(super) struct RawSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub file: Vec<Bytes>,
}

/// Splits an encoded set into its files, each decoded and kept encoded.
pub(super) fn split_set(bytes: &[u8], origin: &Path) -> Result<Vec<Sourced>, CatalogError> {
    let set = RawSet::decode(bytes).map_err(|e| CatalogError::file(origin, format!("not a FileDescriptorSet: {e}")))?;
    set.file
        .into_iter()
        .map(|raw| {
            let proto = FileDescriptorProto::decode(raw.clone())
                .map_err(|e| CatalogError::file(origin, format!("not a FileDescriptorSet: {e}")))?;
            Ok(Sourced { origin: origin.to_owned(), proto, raw })
        })
        .collect()
}

/// True when a path names something the catalog loads (used to ignore editor temp files).
pub fn is_descriptor_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "proto" || SET_EXTENSIONS.contains(&e))
}

/// Whether a change at `path` can change the catalog, when `files` are the descriptor files
/// watched by name: a descriptor file or a folder (which may bring files of its own: inotify
/// cannot report files written into a folder before its watch is set up) under a watched folder,
/// or a watched file. Editor swap files and other non-descriptor files are ignored.
pub fn touches_catalog(path: &Path, files: &[PathBuf]) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    let folder = path.extension().is_none();
    !hidden && (is_descriptor_file(path) || folder || files.iter().any(|f| f == path))
}

/// Reads every descriptor under `paths`, in a stable order (paths as given, folders sorted).
pub(super) fn load(paths: &[PathBuf], include: &[PathBuf]) -> Result<Vec<Sourced>, CatalogError> {
    let mut out = Vec::new();
    for root in paths {
        let mut files = Vec::new();
        if root.is_dir() {
            walk(root, &mut files)?;
            files.sort();
        } else if root.is_file() {
            files.push(root.clone());
        } else {
            return Err(CatalogError::file(root, "no such file or folder"));
        }
        let proto_root = if root.is_dir() { root.as_path() } else { root.parent().unwrap_or(Path::new(".")) };
        for file in files {
            if file.extension().is_some_and(|e| e == "proto") {
                out.extend(compile_proto(&file, proto_root, include)?);
            } else {
                out.extend(read_set(&file)?);
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::file(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| CatalogError::file(dir, e))?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_descriptor_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_set(path: &Path) -> Result<Vec<Sourced>, CatalogError> {
    let bytes = std::fs::read(path).map_err(|e| CatalogError::file(path, e))?;
    let files = split_set(&bytes, path)?;
    if files.is_empty() {
        return Err(CatalogError::file(path, "the descriptor set holds no files"));
    }
    Ok(files)
}

/// Compiles one `.proto` file (and its imports) with protox. Imports resolve against the folder
/// it was found in, then `proto_include`, then protobuf's own well-known files.
fn compile_proto(path: &Path, root: &Path, include: &[PathBuf]) -> Result<Vec<Sourced>, CatalogError> {
    let roots = std::iter::once(root).chain(include.iter().map(PathBuf::as_path));
    let mut compiler = protox::Compiler::new(roots).map_err(|e| CatalogError::file(path, e))?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_file(path).map_err(|e| CatalogError::file(path, e))?;
    split_set(&compiler.encode_file_descriptor_set(), path)
}

/// Compiles `.proto` files into one encoded descriptor set with imports and source info, as
/// `dragoman compile` writes it.
pub fn compile_set(files: &[PathBuf], include: &[PathBuf]) -> Result<Vec<u8>, CatalogError> {
    let mut compiler = protox::Compiler::new(include).map_err(|e| CatalogError::Other(e.to_string()))?;
    compiler.include_imports(true).include_source_info(true);
    for file in files {
        compiler.open_file(file).map_err(|e| CatalogError::file(file, e))?;
    }
    Ok(compiler.encode_file_descriptor_set())
}

/// Every `.proto` file under `paths` (folders searched recursively), sorted.
pub fn proto_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CatalogError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.retain(|p| p.extension().is_some_and(|e| e == "proto"));
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// One of protobuf's own well-known files (`google/protobuf/*.proto`) with its imports, for sets
/// compiled without them.
pub(super) fn well_known(name: &str, origin: &Path) -> Option<Vec<Sourced>> {
    let mut compiler = protox::Compiler::with_file_resolver(protox::file::GoogleFileResolver::new());
    compiler.include_imports(true);
    compiler.open_file(name).ok()?;
    split_set(&compiler.encode_file_descriptor_set(), origin).ok()
}
