//! Compiles the demo shop's `.proto` sources with protox (no system protoc) into one descriptor
//! set in OUT_DIR, and generates the demo backends' tonic code from it. The same set is checked in
//! as `descriptors/shop.binpb`; `tests/cli.rs` fails when the two drift apart. Also compiles
//! googleapis' google/rpc files (status, code, error details), which the catalog adds to sets that
//! do not bring them.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut sources = Vec::new();
    collect_protos(Path::new("proto/shop"), &mut sources)?;
    sources.sort();

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    for source in &sources {
        compiler.open_file(source)?;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("shop.binpb"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure().build_transport(false).compile_fds(compiler.file_descriptor_set())?;

    let mut rpc = protox::Compiler::new(["proto"])?;
    rpc.include_imports(true).include_source_info(true);
    for file in ["google/rpc/status.proto", "google/rpc/code.proto", "google/rpc/error_details.proto"] {
        rpc.open_file(file)?;
    }
    std::fs::write(out_dir.join("google_rpc.binpb"), rpc.encode_file_descriptor_set())?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
