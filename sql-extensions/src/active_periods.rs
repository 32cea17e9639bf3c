//! `active_periods`: stickiness, the number of distinct periods in which a user was active.
//!
//! ```sql
//! active_periods(period, ts, active_cond [, origin]) -> Int64
//! ```
//!
//! Per group (user), how many distinct periods hold at least one row meeting `active_cond`.
//! Periods are bins of length `period` starting at `origin`, as `date_bin` cuts them: a row at
//! `ts` is in bin `floor((ts - origin) / period)`. `origin` is a constant of the event-time kind
//! and defaults to the Unix epoch (1970-01-01T00:00:00Z, a Thursday), so with
//! `INTERVAL '1 day'` the periods are UTC calendar days; for weeks starting on Monday give a
//! Monday, e.g. `TIMESTAMP '2026-01-05 00:00:00'`.
//!
//! `period` is a constant INTERVAL or integer (seconds for timestamps, days for DATE, raw units
//! for integer times), never months. Rows with NULL `ts` are ignored and a NULL condition is
//! false; a user with no active row counts 0. PostHog's stickiness report is one query:
//!
//! ```sql
//! SELECT days, count(*) AS users
//! FROM (SELECT user_id, active_periods(INTERVAL '1 day', ts, event = 'purchase') AS days
//!       FROM events WHERE ts >= TIMESTAMP '2026-10-01' AND ts < TIMESTAMP '2026-11-01'
//!       GROUP BY user_id)
//! WHERE days > 0 GROUP BY days ORDER BY days;
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::{DataType, UInt8Type};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::{EventListAggregate, EventListFunction, EventListUdaf, constant};
use crate::conditions::{check_boolean, small_condition_masks};
use crate::time::{check_event_time, constant_time, window_in_units};

const NAME: &str = "active_periods";
const USAGE: &str = "active_periods(period, ts, active_cond [, origin])";
const TS: usize = 1;
const CONDITION: usize = 2;
const ORIGIN: usize = 3;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(
        EventListUdaf::<ActivePeriods>::new(),
    ))]
}

/// The aggregate: see the module documentation.
struct ActivePeriods;

impl EventListAggregate for ActivePeriods {
    type Function = Spec;

    const NAME: &'static str = NAME;
    const VALUE_NAME: &'static str = "active";

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        check_types(arg_types)?;
        Ok(DataType::Int64)
    }

    fn function(args: &AccumulatorArgs) -> Result<Spec> {
        spec(args)
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    /// Period length and origin in event-time units.
    period: i64,
    origin: i64,
}

fn check_types(types: &[DataType]) -> Result<()> {
    if !(3..=4).contains(&types.len()) {
        return plan_err!("{NAME} takes 3 or 4 arguments: {USAGE}");
    }
    check_event_time(NAME, types, TS)?;
    check_boolean(NAME, "activity condition", types, CONDITION)?;
    Ok(())
}

fn spec(args: &AccumulatorArgs) -> Result<Spec> {
    let types = crate::common::argument_types(args);
    check_types(&types)?;
    let ts_type = &types[TS];
    let period = window_in_units(NAME, constant(NAME, args, 0, "period")?, ts_type)?;
    let origin = if types.len() > ORIGIN {
        constant_time(NAME, args, ORIGIN, "origin", ts_type)?
    } else {
        0
    };
    Ok(Spec { period, origin })
}

/// Distinct periods among one user's (time, active) rows.
fn count(events: &mut [(i64, u8)], spec: Spec) -> i64 {
    let (period, origin) = (spec.period as i128, spec.origin as i128);
    let mut periods: Vec<i128> = events
        .iter()
        .filter(|(_, active)| *active != 0)
        .map(|&(ts, _)| (ts as i128 - origin).div_euclid(period))
        .collect();
    periods.sort_unstable();
    periods.dedup();
    periods.len() as i64
}

impl EventListFunction for Spec {
    type Value = UInt8Type;

    fn ts_index(&self) -> usize {
        TS
    }

    fn row_values(&self, values: &[ArrayRef]) -> Vec<u8> {
        small_condition_masks(&values[CONDITION..=CONDITION], values[TS].len())
    }

    fn evaluate(&self, groups: &mut [Vec<(i64, u8)>]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter_mut().map(|events| count(events, *self)),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_active_periods() {
        let spec = Spec {
            period: 10,
            origin: 0,
        };
        // Periods 0 (twice), 1, and 3; the row at 25 is not active.
        let mut events = vec![(3, 1), (7, 1), (12, 1), (25, 0), (39, 1)];
        assert_eq!(count(&mut events, spec), 3);
        assert_eq!(count(&mut [], spec), 0);
        assert_eq!(count(&mut [(5, 0)], spec), 0);
    }

    #[test]
    fn periods_start_at_the_origin_and_extend_before_it() {
        let spec = Spec {
            period: 10,
            origin: 5,
        };
        // 4 is in the period before the origin, 5 and 14 share the first one.
        assert_eq!(count(&mut [(4, 1), (5, 1), (14, 1)], spec), 2);
        assert_eq!(count(&mut [(-6, 1), (-5, 1)], spec), 2);
    }
}
