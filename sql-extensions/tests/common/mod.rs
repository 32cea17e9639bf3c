//! Sessions and tables the aggregation tests share.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

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
