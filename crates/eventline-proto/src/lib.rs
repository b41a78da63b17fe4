//! Generated code for the `eventline.v1` API: prost messages, tonic clients and servers,
//! proto3-JSON serde impls (pbjson), and the encoded descriptor set that feeds server
//! reflection and the REST gateway. The one hand-written type is [`Properties`], the
//! still-encoded `google.protobuf.Struct` of `Event.properties`.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

pub mod codec;
mod properties;

pub use properties::Properties;

/// The `eventline.v1` package.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/eventline.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/eventline.v1.serde.rs"));
}

/// The `google.api` annotation types the protos import.
pub mod google {
    /// `google.api`.
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every eventline proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/eventline_descriptor.bin"));
