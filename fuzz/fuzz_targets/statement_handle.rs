//! Statement tickets and prepared-statement handles as clients send them back: protobuf, with
//! an Arrow IPC stream of bound parameters inside, decoded as the Flight SQL service does.
#![no_main]

use cohort_engine::ipc::{DecodeBudget, read_stream};
use cohort_proto::v1::StatementHandle;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(handle) = StatementHandle::decode(bytes) {
        let mut budget = DecodeBudget::new("parameters", 64 << 20);
        let _ = read_stream(&handle.parameters_ipc, &mut budget);
    }
});
