//! Sessions and tables the aggregation tests share.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::Int64Type;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

/// A configuration with `batch_size` rows per batch and `partitions` target partitions;
/// `skip_partial` makes partial aggregation give up at once, so states are built row by row
/// with `convert_to_state`.
pub fn config(batch_size: usize, partitions: usize, skip_partial: bool) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_batch_size(batch_size)
        .with_target_partitions(partitions);
    if skip_partial {
        let options = config.options_mut();
        options
            .execution
            .skip_partial_aggregation_probe_rows_threshold = 0;
        options
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = 0.0;
    }
    config
}

/// A session with Cohort's functions; `runs` adds its plan rewrites (the run aggregation), as
/// the server plans. Without them DataFusion's own operators run.
pub fn session(config: SessionConfig, runtime: Arc<RuntimeEnv>, runs: bool) -> SessionContext {
    let builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features();
    let builder = if runs {
        cohort_sql_extensions::with_extensions(builder)
    } else {
        builder
    };
    let mut state = builder.build();
    cohort_sql_extensions::register_all(&mut state).unwrap();
    SessionContext::new_with_state(state)
}

/// Registers `batch` as table `t`, split into `partitions` partitions of consecutive rows.
pub fn register_partitioned(ctx: &SessionContext, batch: &RecordBatch, partitions: usize) {
    let chunk = batch.num_rows().div_ceil(partitions).max(1);
    let parts: Vec<Vec<RecordBatch>> = (0..batch.num_rows())
        .step_by(chunk)
        .map(|start| vec![batch.slice(start, chunk.min(batch.num_rows() - start))])
        .collect();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(batch.schema(), parts).unwrap()),
    )
    .unwrap();
}

/// `batch` in the two arrival orders the aggregation tests compare: as generated (shuffled), and
/// grouped by the user in its first (Int64) column with each user's rows in their original
/// order, as stored data arrives, so the run aggregation hands users on while incomplete.
pub fn arrival_orders(batch: &RecordBatch) -> [(&'static str, RecordBatch); 2] {
    let users = batch.column(0).as_primitive::<Int64Type>();
    let mut by_user: Vec<u32> = (0..batch.num_rows() as u32).collect();
    by_user.sort_by_key(|&row| users.value(row as usize));
    let grouped = arrow::compute::take_record_batch(batch, &UInt32Array::from(by_user)).unwrap();
    [("shuffled", batch.clone()), ("by user", grouped)]
}
