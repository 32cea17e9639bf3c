//! `lifecycle`: growth accounting, each user's status in each period of a report.
//!
//! ```sql
//! lifecycle(period, periods, ts, active_cond, start) -> List<Struct<period, status>>
//! ```
//!
//! The report is `periods` consecutive periods of length `period`, the first starting at
//! `start`. Per group (user), one entry per reported period in which the user has a status,
//! in period order: `period` is the start of the period (of the event-time type) and `status`
//! one of PostHog's lifecycle statuses, where a period is *active* when a row in it meets
//! `active_cond`:
//!
//! - `new`: active, and no earlier period is;
//! - `returning`: active, and so was the period before;
//! - `resurrecting`: active, the period before was not, an earlier one was;
//! - `dormant`: not active, but the period before was.
//!
//! A period in which none of these holds (the user not yet seen, or inactive for longer)
//! has no entry. Rows before `start` are history: they make a user returning, resurrecting or
//! dormant rather than new in the report, as PostHog's lifecycle looks back before its date
//! range; so filter the report's periods, not the rows, to keep statuses true. Rows after the
//! report are ignored. PostHog decides `new` by the person's creation time; here it is the
//! first active period, so give the rows the whole history you want to count.
//!
//! Periods are bins of `period` aligned to `start`, as `date_bin` cuts them. `period` is a
//! constant INTERVAL or integer (seconds for timestamps, days for DATE, raw units for integer
//! times), never months; `periods` a constant from 1 to 10000; `start` a constant point in time.
//! Rows with NULL `ts` are ignored and a NULL condition is false. The growth-accounting table:
//!
//! ```sql
//! SELECT l['period'] AS week, l['status'] AS status, count(*) AS users
//! FROM (SELECT unnest(lifecycle(INTERVAL '7 days', 8, ts, true, TIMESTAMP '2026-09-07')) AS l
//!       FROM events GROUP BY user_id)
//! GROUP BY week, status ORDER BY week, status;
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, UInt8Type};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::{
    EventListAggregate, EventListFunction, EventListUdaf, constant, constant_count, list_column,
};
use crate::conditions::{check_boolean, small_condition_masks};
use crate::time::{check_event_time, constant_time, to_event_time_array, window_in_units};

const NAME: &str = "lifecycle";
const USAGE: &str = "lifecycle(period, periods, ts, active_cond, start)";
const MAX_PERIODS: i64 = 10_000;
const TS: usize = 2;
const CONDITION: usize = 3;
const START: usize = 4;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(
        EventListUdaf::<Lifecycle>::new(),
    ))]
}

/// A user's status in one period of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New,
    Returning,
    Resurrecting,
    Dormant,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Returning => "returning",
            Status::Resurrecting => "resurrecting",
            Status::Dormant => "dormant",
        }
    }
}

/// The aggregate: see the module documentation.
struct Lifecycle;

impl EventListAggregate for Lifecycle {
    type Function = Spec;

    const NAME: &'static str = NAME;
    const VALUE_NAME: &'static str = "active";

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        check_types(arg_types)?;
        Ok(output_type(&arg_types[TS]))
    }

    fn function(args: &AccumulatorArgs) -> Result<Spec> {
        spec(args)
    }
}

/// The report's periods in event-time units.
#[derive(Debug, Clone)]
pub struct Spec {
    pub period: i64,
    pub periods: usize,
    pub start: i64,
    ts_type: DataType,
}

fn check_types(types: &[DataType]) -> Result<()> {
    if types.len() != 5 {
        return plan_err!(
            "{NAME} takes 5 arguments: {USAGE}; the start is needed because every user's periods must be the same"
        );
    }
    if !types[1].is_integer() {
        return plan_err!(
            "{NAME}: the number of periods (argument 2) must be an integer, got {}",
            types[1]
        );
    }
    check_event_time(NAME, types, TS)?;
    check_boolean(NAME, "activity condition", types, CONDITION)?;
    Ok(())
}

fn entry_fields(ts_type: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("period", ts_type.clone(), false),
        Field::new("status", DataType::Utf8, false),
    ])
}

fn output_type(ts_type: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(entry_fields(ts_type)),
        false,
    )))
}

fn spec(args: &AccumulatorArgs) -> Result<Spec> {
    let types = crate::common::argument_types(args);
    check_types(&types)?;
    let ts_type = types[TS].clone();
    Ok(Spec {
        period: window_in_units(NAME, constant(NAME, args, 0, "period")?, &ts_type)?,
        periods: constant_count(NAME, args, 1, "number of periods", MAX_PERIODS)?,
        start: constant_time(NAME, args, START, "start", &ts_type)?,
        ts_type,
    })
}

/// One user's statuses, `(period index, status)` in period order, from the times of their
/// active rows (any order, repeats allowed).
pub fn statuses(active_times: &[i64], spec: &Spec) -> Vec<(usize, Status)> {
    let (period, start) = (spec.period as i128, spec.start as i128);
    let reported = 0..spec.periods as i128;
    let mut bins: Vec<i128> = active_times
        .iter()
        .map(|&ts| (ts as i128 - start).div_euclid(period))
        .filter(|&bin| bin < spec.periods as i128)
        .collect();
    bins.sort_unstable();
    bins.dedup();
    let mut out = Vec::new();
    let mut emit = |bin: i128, status: Status| {
        if reported.contains(&bin) {
            out.push((bin as usize, status));
        }
    };
    let mut previous: Option<i128> = None;
    for &bin in &bins {
        let status = match previous {
            None => Status::New,
            Some(p) if p + 1 == bin => Status::Returning,
            Some(p) => {
                emit(p + 1, Status::Dormant);
                Status::Resurrecting
            }
        };
        emit(bin, status);
        previous = Some(bin);
    }
    if let Some(last) = previous {
        emit(last + 1, Status::Dormant);
    }
    out
}

fn outputs(groups: &mut [Vec<(i64, u8)>], spec: &Spec) -> Result<ArrayRef> {
    let mut lengths = Vec::with_capacity(groups.len());
    let mut starts = Vec::new();
    let mut names = Vec::new();
    for events in groups.iter() {
        let times: Vec<i64> = events.iter().map(|e| e.0).collect();
        let user = statuses(&times, spec);
        lengths.push(user.len());
        for (index, status) in user {
            let Some(period_start) = (index as i64)
                .checked_mul(spec.period)
                .and_then(|offset| offset.checked_add(spec.start))
            else {
                return exec_err!("{NAME}: period {index} of the report is out of the time range");
            };
            starts.push(period_start);
            names.push(status.as_str());
        }
    }
    let entries = StructArray::try_new(
        entry_fields(&spec.ts_type),
        vec![
            to_event_time_array(Int64Array::from(starts), &spec.ts_type)?,
            Arc::new(StringArray::from(names)),
        ],
        None,
    )?;
    list_column(
        OffsetBuffer::from_lengths(lengths),
        Arc::new(entries),
        false,
    )
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
        outputs(groups, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn spec(periods: usize, start: i64) -> Spec {
        Spec {
            period: 10,
            periods,
            start,
            ts_type: DataType::Int64,
        }
    }

    #[test]
    fn every_status_in_order() {
        // Active in periods 0, 1, 3 (twice) and 6.
        let times = [35, 3, 12, 31, 60];
        assert_eq!(
            statuses(&times, &spec(8, 0)),
            [
                (0, New),
                (1, Returning),
                (2, Dormant),
                (3, Resurrecting),
                (4, Dormant),
                (6, Resurrecting),
                (7, Dormant)
            ]
        );
    }

    #[test]
    fn history_before_the_report_counts_and_later_rows_do_not() {
        // From 20, the rows at 3 and 12 are periods -2 and -1: not new at 0, but returning.
        assert_eq!(
            statuses(&[3, 12, 25], &spec(2, 20)),
            [(0, Returning), (1, Dormant)]
        );
        // Active only just before the report: dormant in its first period.
        assert_eq!(statuses(&[15], &spec(3, 20)), [(0, Dormant)]);
        // Long inactive before the report: nothing until they come back.
        assert_eq!(
            statuses(&[-100, 45], &spec(4, 20)),
            [(2, Resurrecting), (3, Dormant)]
        );
        // A row after the report is not seen, so no status changes from it.
        assert_eq!(statuses(&[25, 70], &spec(2, 20)), [(0, New), (1, Dormant)]);
        assert!(statuses(&[], &spec(2, 20)).is_empty());
    }

    #[test]
    fn bins_floor_before_the_start() {
        // -1 is in period -1 from 0 (as date_bin floors), not in period 0.
        assert_eq!(statuses(&[-1], &spec(2, 0)), [(0, Dormant)]);
    }
}
