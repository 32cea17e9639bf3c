//! Cohort's SQL functions for DataFusion: pure Arrow computations with no IO.
//!
//! Each function family lives in its own module with its documentation beside the code and
//! exposes `functions()`; [`register_all`] registers every family by name, so any process
//! (a Cohort server, a test, a scale-out executor) resolves the same names the same way.

pub mod active_periods;
pub mod bitmap;
pub mod bounded_output;
pub mod catalog;
pub mod common;
pub mod conditions;
pub mod event_path;
pub mod funnel;
pub mod group_lists;
pub mod lifecycle;
pub mod next_node;
pub mod path_edges;
pub mod retention;
pub mod retention_periods;
pub mod run_aggregate;
pub mod run_final;
pub mod sequence;
pub mod split;
pub mod sum_for_each;
pub mod time;
pub mod utc_date;
pub mod value_events;

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::error::Result;
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

/// Every scalar function this crate provides.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    [
        bitmap::scalar_functions(),
        split::functions(),
        utc_date::functions(),
    ]
    .concat()
}

/// Every aggregate function this crate provides.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    [
        active_periods::functions(),
        bitmap::aggregate_functions(),
        event_path::functions(),
        funnel::functions(),
        lifecycle::functions(),
        next_node::functions(),
        retention::functions(),
        retention_periods::functions(),
        sequence::functions(),
        sum_for_each::functions(),
    ]
    .concat()
}

/// Every table function this crate provides, by name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    path_edges::table_functions()
}

/// Registers every Cohort function with `registry` (a `SessionState`), and the expression
/// rewrites that route standard SQL to faster kernels ([`utc_date::UtcDateCast`]).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for function in scalar_functions() {
        registry.register_udf(function)?;
    }
    for function in aggregate_functions() {
        registry.register_udaf(function)?;
    }
    registry.register_function_rewrite(Arc::new(utc_date::UtcDateCast))?;
    bounded_output::register(registry)?;
    Ok(())
}

/// Adds Cohort's physical plan rewrites to a session under construction (they run after
/// DataFusion's own): [`run_aggregate::RunAggregateRule`], which puts in the run aggregation
/// operators. Functions (and the rewrites of their arguments, such as packed conditions) are
/// registered on the built state with [`register_all`].
pub fn with_extensions(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.with_physical_optimizer_rule(Arc::new(run_aggregate::RunAggregateRule))
}

/// The state of a session that plans as Cohort does: `builder` with [`with_extensions`], built,
/// with every function registered by [`register_all`] and the [`table_functions`].
pub fn session_state(builder: SessionStateBuilder) -> Result<SessionState> {
    let mut state = with_extensions(builder).build();
    register_all(&mut state)?;
    for (name, function) in table_functions() {
        state.register_udtf(name, function);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Two functions under one name would silently shadow each other at registration.
    #[test]
    fn function_names_are_unique() {
        let mut names = HashSet::new();
        let scalar = scalar_functions().into_iter().flat_map(|f| {
            std::iter::once(f.name().to_string())
                .chain(f.aliases().iter().cloned())
                .collect::<Vec<_>>()
        });
        let aggregate = aggregate_functions().into_iter().flat_map(|f| {
            std::iter::once(f.name().to_string())
                .chain(f.aliases().iter().cloned())
                .collect::<Vec<_>>()
        });
        let table = table_functions()
            .into_iter()
            .map(|(name, _)| name.to_string());
        for name in scalar.chain(aggregate).chain(table) {
            assert!(names.insert(name.clone()), "duplicate function name {name}");
        }
    }
}
