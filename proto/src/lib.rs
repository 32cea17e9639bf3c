//! Cohort's own gRPC API, generated from the `.proto` files in `proto/`.

#[allow(unused_qualifications, clippy::all)]
pub mod v1 {
    tonic::include_proto!("cohort.v1");

    /// Encoded descriptors of every Cohort service, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cohort_descriptor");
}
