//! Compiles `proto/` into prost + tonic code and pbjson serde impls, all from one
//! descriptor set that is also embedded for reflection and the REST gateway.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = ["event.proto", "ingest.proto", "query.proto", "admin.proto"]
        .map(|file| proto_root.join("eventline/v1").join(file));
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("eventline_descriptor.bin");

    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Event.properties stays encoded until validation writes it as JSON (properties.rs).
        .extern_path(".google.protobuf.Struct", "crate::Properties")
        // Undecodable messages are INVALID_ARGUMENT, not INTERNAL (codec.rs).
        .codec_path("crate::codec::StrictProstCodec")
        .compile_protos(&protos, std::slice::from_ref(&proto_root))?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    // JSON keeps the proto field names (snake_case); both spellings are accepted on input.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .preserve_proto_field_names()
        .build(&[".eventline.v1"])?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
