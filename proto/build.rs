//! Generates the gRPC code from `proto/` with a protoc binary shipped as a crate, so builds need
//! no system protoc and no download.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/cohort/v1/flight.proto",
        "proto/cohort/v1/admin.proto",
        "proto/cohort/v1/activation.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("cohort_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
