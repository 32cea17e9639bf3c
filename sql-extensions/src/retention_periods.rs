//! `retention_periods`: time-aware retention, which ClickHouse's `retention` cannot express.
//!
//! ```sql
//! retention_periods(period, periods, [mode,] ts, start_cond, return_cond) -> List<UInt8>
//! ```
//!
//! Per group (user), a list of `periods + 1` flags. Element 0 is 1 if the user met
//! `start_cond` at all (they belong to a cohort). Element k (1..=periods) is 1 if the user met
//! `return_cond` in period k after a start event `s`, i.e. at a time in
//! `[s + k * period, s + (k + 1) * period)`. `mode`, as PostHog defines retention:
//! - `'first_time'` (default): `s` is the user's first start event;
//! - `'recurring'`: any start event counts, so a user returning k periods after *some* start is
//!   retained in period k.
//!
//! `period` is a constant INTERVAL or integer (seconds for timestamps, days for DATE, raw units
//! for integer times); `periods` a constant integer from 1 to 1000. Rows with NULL `ts` are
//! ignored, NULL conditions are false. A cohort retention matrix is one query:
//!
//! ```sql
//! SELECT date_trunc('week', first_seen) AS cohort, count(*) AS users, sum_for_each(r) AS retained
//! FROM (SELECT user_id,
//!              min(ts) FILTER (WHERE event = 'signup') AS first_seen,
//!              retention_periods(INTERVAL '1 week', 8, ts, event = 'signup', event = 'login') AS r
//!       FROM events GROUP BY user_id)
//! WHERE first_seen IS NOT NULL
//! GROUP BY cohort ORDER BY cohort;
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt8Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, UInt8Type};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::{
    EventListAggregate, EventListFunction, EventListUdaf, constant, constant_count,
    constant_string, list_column,
};
use crate::conditions::small_condition_masks;
use crate::time::{is_event_time, window_in_units};

const NAME: &str = "retention_periods";
const MAX_PERIODS: i64 = 1000;
const START: u8 = 1;
const RETURN: u8 = 2;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(EventListUdaf::<
        RetentionPeriods,
    >::new()))]
}

/// The aggregate: see the module documentation.
struct RetentionPeriods;

impl EventListAggregate for RetentionPeriods {
    type Function = Spec;

    const NAME: &'static str = NAME;
    const VALUE_NAME: &'static str = "kind";

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        ts_index(arg_types)?;
        Ok(DataType::List(item_field()))
    }

    fn function(args: &AccumulatorArgs) -> Result<Spec> {
        spec(args)
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    period: i64,
    periods: usize,
    recurring: bool,
    ts_index: usize,
}

/// Index of the event-time argument (after the optional mode).
fn ts_index(types: &[DataType]) -> Result<usize> {
    let usage = "retention_periods(period, periods, [mode,] ts, start_cond, return_cond)";
    let index = if types.len() == 6 { 3 } else { 2 };
    if !(5..=6).contains(&types.len()) {
        return plan_err!("{NAME} takes 5 or 6 arguments: {usage}");
    }
    if index == 3
        && !matches!(
            types[2],
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        )
    {
        return plan_err!(
            "{NAME}: the mode must be a string, got {}: {usage}",
            types[2]
        );
    }
    if !types[1].is_integer() {
        return plan_err!(
            "{NAME}: the number of periods must be an integer, got {}: {usage}",
            types[1]
        );
    }
    if !is_event_time(&types[index]) {
        return plan_err!(
            "{NAME}: the event time must be a timestamp, date or integer, got {}",
            types[index]
        );
    }
    for (which, t) in ["start", "return"].iter().zip(&types[index + 1..]) {
        if !matches!(t, DataType::Boolean | DataType::Null) {
            return plan_err!("{NAME}: the {which} condition must be boolean, got {t}");
        }
    }
    Ok(index)
}

fn spec(args: &AccumulatorArgs) -> Result<Spec> {
    let types = crate::common::argument_types(args);
    let ts_index = ts_index(&types)?;
    let period = window_in_units(NAME, constant(NAME, args, 0, "period")?, &types[ts_index])?;
    let periods = constant_count(NAME, args, 1, "number of periods", MAX_PERIODS)?;
    let recurring = if ts_index == 3 {
        match constant_string(NAME, args, 2, "mode")?.trim() {
            "first_time" => false,
            "recurring" => true,
            other => {
                return plan_err!("{NAME}: unknown mode '{other}' (modes: first_time, recurring)");
            }
        }
    } else {
        false
    };
    Ok(Spec {
        period,
        periods,
        recurring,
        ts_index,
    })
}

/// The retention flags of one user's (timestamp, start/return bits) events.
fn flags(events: &mut [(i64, u8)], spec: Spec) -> Vec<u8> {
    let mut out = vec![0u8; spec.periods + 1];
    events.sort_unstable();
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e.1 & START != 0)
        .map(|e| e.0)
        .collect();
    let Some(&first) = starts.first() else {
        return out;
    };
    out[0] = 1;
    let anchors: &[i64] = if spec.recurring {
        &starts
    } else {
        std::slice::from_ref(&first)
    };
    let period = spec.period as i128;
    let mut remaining = spec.periods;
    for &(ts, bits) in events.iter() {
        if bits & RETURN == 0 {
            continue;
        }
        // Anchors at or before this return that are within reach of the last period.
        let reach = anchors.partition_point(|&s| s <= ts);
        for &s in anchors[..reach].iter().rev() {
            let k = (ts as i128 - s as i128) / period;
            if k > spec.periods as i128 {
                break;
            }
            if k >= 1 && out[k as usize] == 0 {
                out[k as usize] = 1;
                remaining -= 1;
                if remaining == 0 {
                    return out;
                }
            }
        }
    }
    out
}

fn item_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::UInt8, false))
}

fn outputs(groups: &mut [Vec<(i64, u8)>], spec: Spec) -> Result<ArrayRef> {
    let values = UInt8Array::from_iter_values(groups.iter_mut().flat_map(|g| flags(g, spec)));
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(spec.periods + 1, groups.len()));
    list_column(offsets, Arc::new(values), false)
}

impl EventListFunction for Spec {
    type Value = UInt8Type;

    fn ts_index(&self) -> usize {
        self.ts_index
    }

    fn row_values(&self, values: &[ArrayRef]) -> Vec<u8> {
        // Condition bits 0 and 1 are START and RETURN.
        let conditions = &values[self.ts_index + 1..self.ts_index + 3];
        small_condition_masks(conditions, values[self.ts_index].len())
    }

    fn evaluate(&self, groups: &mut [Vec<(i64, u8)>]) -> Result<ArrayRef> {
        outputs(groups, *self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(recurring: bool) -> Spec {
        Spec {
            period: 10,
            periods: 3,
            recurring,
            ts_index: 0,
        }
    }

    #[test]
    fn first_time_counts_from_the_first_start() {
        // start at 0, returns at 5 (period 0), 12 (period 1), 35 (period 3), 40 (beyond).
        let mut events = vec![
            (12, RETURN),
            (0, START),
            (5, RETURN),
            (35, RETURN),
            (40, RETURN),
            (20, START),
        ];
        assert_eq!(flags(&mut events, spec(false)), [1, 1, 0, 1]);
    }

    #[test]
    fn recurring_counts_from_any_start() {
        // second start at 20: the return at 35 is period 1 after it; 12 is period 1 after 0.
        let mut events = vec![(0, START), (20, START), (12, RETURN), (35, RETURN)];
        assert_eq!(flags(&mut events, spec(true)), [1, 1, 0, 1]);
        let mut events = vec![(0, START), (20, START), (12, RETURN), (35, RETURN)];
        assert_eq!(flags(&mut events, spec(false)), [1, 1, 0, 1]);
        let mut events = vec![(0, START), (30, START), (45, RETURN)];
        assert_eq!(
            flags(&mut events, spec(false)),
            [1, 0, 0, 0],
            "45 is period 4 after the first start"
        );
        let mut events = vec![(0, START), (30, START), (45, RETURN)];
        assert_eq!(flags(&mut events, spec(true)), [1, 1, 0, 0]);
    }

    #[test]
    fn no_start_no_cohort() {
        let mut events = vec![(5, RETURN)];
        assert_eq!(flags(&mut events, spec(false)), [0, 0, 0, 0]);
        // A row that is both start and return.
        let mut events = vec![(0, START | RETURN), (10, START | RETURN)];
        assert_eq!(flags(&mut events, spec(false)), [1, 1, 0, 0]);
    }
}
