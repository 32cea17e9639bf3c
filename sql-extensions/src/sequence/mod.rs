//! `sequence_match` and `sequence_count`: does a group's event history contain a pattern, and
//! how many times. ClickHouse's `sequenceMatch(pattern)(ts, cond...)` / `sequenceCount`.
//!
//! ```sql
//! sequence_match(pattern, ts, cond1, ..., condN)  -> Boolean
//! sequence_count(pattern, ts, cond1, ..., condN)  -> UInt64
//! ```
//!
//! - `pattern`: a constant string. `(?N)` is an event meeting condition N; `.` any event;
//!   `.*` any number of events; `(?t<=S)`, `(?t<S)`, `(?t>=S)`, `(?t>S)`, `(?t==S)` bound the
//!   time between the event matched just before it and the next event; after `.*` that anchor
//!   is the `.*` position itself, so `(?1).*(?t<=S)(?2)` does not bound the gap (as in ClickHouse). `S` is seconds for timestamp event times,
//!   days for DATE and raw units for integer event times.
//! - `ts`: a timestamp, date or integer column; rows with NULL `ts` are ignored.
//! - `cond1..condN`: 1 to 32 boolean conditions (NULL is false). Only rows meeting at least one
//!   condition are events: others are invisible to the pattern, as in ClickHouse.
//!
//! Events are ordered by time; events at the same time are ordered by the lowest condition they
//! meet (ClickHouse leaves that order unspecified). `sequence_count` counts non-overlapping
//! matches from left to right. A pattern needing more than 1,000,000 matching steps for one
//! group is an error rather than a runaway query.
//!
//! ```sql
//! -- Users who added to cart and purchased within 30 minutes, and how often.
//! SELECT user_id,
//!        sequence_match('(?1)(?t<=1800)(?2)', ts, event = 'add_to_cart', event = 'purchase'),
//!        sequence_count('(?1).*(?2)', ts, event = 'add_to_cart', event = 'purchase')
//! FROM events GROUP BY user_id;
//! ```

pub mod pattern;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, FieldRef, UInt32Type};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility,
};

use crate::common::{
    EventListFunction, EventListGroups, SingleGroup, constant_string, event_list_fields,
};
use crate::conditions::{check_conditions, condition_masks, pack_conditions};
use crate::time::{integer_amount_in_units, is_event_time};
use pattern::{Entry, Pattern};

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(Sequence::new(false))),
        Arc::new(AggregateUDF::from(Sequence::new(true))),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Sequence {
    count: bool,
    signature: Signature,
    /// Set when the call's conditions arrive packed, one bit each: see [`crate::conditions`].
    packed: Option<usize>,
}

impl Sequence {
    pub fn new(count: bool) -> Self {
        Self::with_packing(count, None)
    }

    fn with_packing(count: bool, packed: Option<usize>) -> Self {
        Self {
            count,
            signature: Signature::variadic_any(Volatility::Immutable),
            packed,
        }
    }

    /// Checks the argument types; returns the number of conditions.
    fn check_types(&self, types: &[DataType]) -> Result<usize> {
        let name = self.name();
        let usage = format!("{name}(pattern, ts, cond1, ..., condN)");
        if types.len() < 3 {
            return plan_err!(
                "{name} needs a pattern, a timestamp and at least one condition: {usage}"
            );
        }
        if !matches!(
            types[0],
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            return plan_err!(
                "{name}: the pattern must be a string, got {}: {usage}",
                types[0]
            );
        }
        if !is_event_time(&types[1]) {
            return plan_err!(
                "{name}: the event time must be a timestamp, date or integer, got {}",
                types[1]
            );
        }
        check_conditions(name, &types[2..], self.packed)
    }

    fn pattern(&self, args: &AccumulatorArgs) -> Result<Arc<Pattern>> {
        let name = self.name();
        let types = crate::common::argument_types(args);
        let conditions = self.check_types(&types)?;
        let text = constant_string(name, args, 0, "pattern")?;
        let ts_type = types[1].clone();
        Ok(Arc::new(Pattern::parse(
            name,
            text,
            conditions,
            |seconds| integer_amount_in_units(seconds, &ts_type),
        )?))
    }

    fn output(&self, pattern: &Pattern, groups: &mut [Vec<Entry>]) -> Result<ArrayRef> {
        let mut results = Vec::with_capacity(groups.len());
        for events in groups.iter_mut() {
            let met = events.iter().fold(0u32, |m, e| m | e.1);
            let value = if met & pattern.required != pattern.required {
                0
            } else {
                events.sort_unstable_by_key(|&(ts, mask)| (ts, mask.trailing_zeros(), mask));
                if self.count {
                    pattern.count(events)?
                } else {
                    pattern.matches(events)? as u64
                }
            };
            results.push(value);
        }
        Ok(if self.count {
            Arc::new(UInt64Array::from(results))
        } else {
            Arc::new(BooleanArray::from_iter(
                results.into_iter().map(|v| Some(v == 1)),
            ))
        })
    }
}

impl AggregateUDFImpl for Sequence {
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn name(&self) -> &str {
        if self.count {
            "sequence_count"
        } else {
            "sequence_match"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.check_types(arg_types)?;
        Ok(if self.count {
            DataType::UInt64
        } else {
            DataType::Boolean
        })
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        Ok(match data_type {
            DataType::UInt64 => ScalarValue::UInt64(Some(0)),
            _ => ScalarValue::Boolean(Some(false)),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(event_list_fields(args.name, "conds", DataType::UInt32))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(EventListGroups::new(
            SequenceEvents {
                function: Self::new(self.count),
                pattern: self.pattern(&args)?,
            },
        ))?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(EventListGroups::new(SequenceEvents {
            function: Self::new(self.count),
            pattern: self.pattern(&args)?,
        })))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let count = self.count;
        self.packed.is_none().then(|| {
            Box::new(move |call: AggregateFunction, info: &SimplifyContext| {
                pack_conditions(call, 2, info, |n| {
                    AggregateUDF::from(Sequence::with_packing(count, Some(n)))
                })
            }) as _
        })
    }
}

/// The pattern a call matches; its events are rows meeting at least one condition.
struct SequenceEvents {
    function: Sequence,
    pattern: Arc<Pattern>,
}

impl EventListFunction for SequenceEvents {
    type Value = UInt32Type;

    fn ts_index(&self) -> usize {
        1
    }

    fn row_values(&self, values: &[ArrayRef]) -> Vec<u32> {
        condition_masks(&values[2..], values[1].len(), None).into()
    }

    fn evaluate(&self, groups: &mut [Vec<Entry>]) -> Result<ArrayRef> {
        self.function.output(&self.pattern, groups)
    }
}
