//! Kernel benchmarks: window_funnel and retention over in-memory demo events.

use std::sync::Arc;

use cohort_benches::{FUNNEL_SQL, retention_sql};
use cohort_engine::demo::{DemoOptions, generate};
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

fn context(runtime: &tokio::runtime::Runtime) -> SessionContext {
    let (events, _) = generate(
        DemoOptions {
            users: 20_000,
            events: 400_000,
            seed: 42,
        },
        &|_| {},
    )
    .unwrap();
    let config = SessionConfig::new().with_target_partitions(2);
    let state = cohort_sql_extensions::session_state(
        SessionStateBuilder::new()
            .with_config(config)
            .with_default_features(),
    )
    .unwrap();
    let ctx = SessionContext::new_with_state(state);
    let chunks: Vec<_> = (0..events.num_rows())
        .step_by(8192)
        .map(|s| events.slice(s, 8192.min(events.num_rows() - s)))
        .collect();
    let table = MemTable::try_new(events.schema(), vec![chunks]).unwrap();
    runtime.block_on(async { ctx.register_table("events", Arc::new(table)).unwrap() });
    ctx
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = context(&runtime);
    for (name, sql) in [
        ("window_funnel_4_steps", FUNNEL_SQL.to_string()),
        ("retention_8_days", retention_sql()),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async { ctx.sql(&sql).await.unwrap().collect().await.unwrap() })
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
