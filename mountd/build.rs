//! Compiles the CSI protocol (proto/csi.proto) into Rust at build time: protox parses it (no
//! system protoc needed), tonic's generator writes the messages, servers and clients.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let descriptors = protox::compile(["proto/csi.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
