//! `window_funnel` and `window_funnel_steps`: how far each group (typically a user) gets
//! through an ordered sequence of steps within a time window.
//!
//! ```sql
//! window_funnel(window, [mode,] ts, cond1, cond2, ..., condN)        -> UInt8
//! window_funnel_steps(window, [mode,] ts, cond1, cond2, ..., condN)  -> List<type of ts>
//! ```
//!
//! - `window`: a constant INTERVAL (`INTERVAL '1 hour'`), or an integer: seconds for timestamp
//!   event times, days for DATE, raw units for integer event times. Must be positive.
//! - `mode`: optional constant string of comma-separated ClickHouse modes: `strict_deduplication`,
//!   `strict_order`, `strict_increase`, `strict_once`, `allow_reentry` (needs `strict_order`),
//!   and Cohort's `unordered` (the steps in any order within the window) and exclusion steps
//!   `exclude(c:a-b)` (see [`level`]): condition `c`, one of the last conditions and not a step,
//!   breaks a chain between its steps `a` and `b`.
//! - `ts`: any timestamp (unit and time zone kept), DATE, or integer column. Rows with NULL `ts`
//!   are ignored.
//! - `cond1..condN`: 1 to 32 boolean conditions; NULL counts as false.
//!
//! `window_funnel` returns the level reached, 0..N, exactly as ClickHouse's
//! `windowFunnel(window, modes...)(ts, cond1, ...)`: a chain starts at a step-1 event and each
//! next step must occur at most `window` after the chain's first event (inclusive); events at
//! equal timestamps are taken in condition order. `window_funnel_steps` returns the timestamps of
//! the chain that reached that level (its length is the level), so time-to-convert and drop-off
//! are one query:
//!
//! ```sql
//! SELECT user_id,
//!        window_funnel(INTERVAL '1 hour', ts, event = 'page_view', event = 'add_to_cart',
//!                      event = 'checkout', event = 'purchase') AS level
//! FROM events GROUP BY user_id;
//!
//! SELECT steps[4] - steps[1] AS time_to_purchase
//! FROM (SELECT window_funnel_steps(INTERVAL '1 hour', 'strict_increase', ts,
//!              event = 'page_view', event = 'add_to_cart', event = 'checkout',
//!              event = 'purchase') AS steps
//!       FROM events GROUP BY user_id)
//! WHERE cardinality(steps) = 4;
//! ```

mod accumulator;
pub mod breakdown;
pub mod level;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility,
};

use crate::common::{SingleGroup, constant, constant_string, is_string};
use crate::conditions::{check_conditions, pack_conditions};
use crate::time::{is_event_time, window_in_units};
use accumulator::{FunnelArgs, FunnelGroupsAccumulator};
use level::{Exclusion, MAX_EXCLUSIONS, MAX_STEPS, Mode, StepWindows};

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    let mut functions = vec![
        Arc::new(AggregateUDF::from(WindowFunnel::new(false))),
        Arc::new(AggregateUDF::from(WindowFunnel::new(true))),
    ];
    functions.extend(breakdown::functions());
    functions
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    steps_output: bool,
    signature: Signature,
    /// Set when the call's conditions arrive packed, one bit each: see [`crate::conditions`].
    packed: Option<usize>,
}

impl WindowFunnel {
    pub fn new(steps_output: bool) -> Self {
        Self::with_packing(steps_output, None)
    }

    fn with_packing(steps_output: bool, packed: Option<usize>) -> Self {
        Self {
            steps_output,
            signature: Signature::variadic_any(Volatility::Immutable),
            packed,
        }
    }
}

/// Positions of the arguments, derived from their types.
struct Layout {
    ts_index: usize,
    ts_type: DataType,
    steps: usize,
}

impl Layout {
    fn from_types(name: &str, types: &[DataType], packed: Option<usize>) -> Result<Self> {
        let usage = format!("{name}(window, [mode,] ts, cond1, ..., condN)");
        if types.len() < 3 {
            return plan_err!(
                "{name} needs a window, a timestamp and at least one condition: {usage}"
            );
        }
        let window = &types[0];
        if !is_window_type(window) {
            return plan_err!(
                "{name}: the window must be an INTERVAL or an integer, or a list of them (one per step after the first), got {window}: {usage}"
            );
        }
        let ts_index = if is_string(&types[1]) { 2 } else { 1 };
        let Some(ts_type) = types.get(ts_index) else {
            return plan_err!("{name}: missing the timestamp argument: {usage}");
        };
        if !is_event_time(ts_type) {
            return plan_err!(
                "{name}: the event time must be a timestamp, date or integer, got {ts_type}: {usage}"
            );
        }
        let conditions = &types[ts_index + 1..];
        if conditions.is_empty() {
            return plan_err!("{name} needs at least one condition: {usage}");
        }
        Ok(Self {
            ts_index,
            ts_type: ts_type.clone(),
            steps: check_conditions(name, conditions, packed)?,
        })
    }
}

/// A window argument's type: an INTERVAL or integer, or a list of them (per-step windows).
pub fn is_window_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            is_single_window_type(item.data_type())
        }
        other => is_single_window_type(other),
    }
}

fn is_single_window_type(data_type: &DataType) -> bool {
    data_type.is_integer() || matches!(data_type, DataType::Interval(_))
}

/// The window of a funnel of `steps` steps, in the event time's units: one constant, or a list
/// of one per step after the first, which goes into `mode` (the returned window is then unused).
pub fn funnel_window(
    name: &str,
    value: &ScalarValue,
    ts_type: &DataType,
    steps: u8,
    mode: &mut Mode,
) -> Result<i64> {
    let list = match value {
        ScalarValue::List(list) => list.value(0),
        ScalarValue::LargeList(list) => list.value(0),
        ScalarValue::FixedSizeList(list) => list.value(0),
        single => return window_in_units(name, single, ts_type),
    };
    if list.len() + 1 != steps as usize {
        return plan_err!(
            "{name}: {} per-step windows for {steps} steps: give one per step after the first ({})",
            list.len(),
            steps.saturating_sub(1)
        );
    }
    if mode.unordered {
        return plan_err!("{name}: per-step windows need ordered steps, not mode unordered");
    }
    let windows = (0..list.len())
        .map(|i| window_in_units(name, &ScalarValue::try_from_array(&list, i)?, ts_type))
        .collect::<Result<Vec<_>>>()?;
    mode.step_windows = StepWindows::new(&windows).ok_or_else(|| {
        DataFusionError::Plan(format!(
            "{name}: at most {} per-step windows",
            MAX_STEPS - 1
        ))
    })?;
    Ok(0)
}

/// Parses a ClickHouse mode list such as `'strict_order, allow_reentry'`.
pub fn parse_mode(name: &str, text: &str) -> Result<Mode> {
    let mut mode = Mode::default();
    for option in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option {
            "strict_deduplication" => mode.strict_deduplication = true,
            "strict_order" => mode.strict_order = true,
            "strict_increase" => mode.strict_increase = true,
            "strict_once" => mode.strict_once = true,
            "allow_reentry" => mode.allow_reentry = true,
            "unordered" => mode.unordered = true,
            exclusion if exclusion.starts_with("exclude") => {
                let parsed = parse_exclusion(exclusion).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "{name}: cannot read '{exclusion}': write exclude(c:a-b), condition c between steps a and b, e.g. exclude(4:1-3)"
                    ))
                })?;
                if !mode.exclusions.push(parsed) {
                    return plan_err!(
                        "{name}: at most {MAX_EXCLUSIONS} exclusions, got more in '{text}'"
                    );
                }
            }
            "strict" => {
                return plan_err!("{name}: mode 'strict' was renamed 'strict_deduplication'");
            }
            other => {
                return plan_err!(
                    "{name}: unknown mode '{other}' (modes: strict_deduplication, strict_order, strict_increase, strict_once, allow_reentry, unordered, exclude(c:a-b))"
                );
            }
        }
    }
    if mode.allow_reentry && !mode.strict_order {
        return plan_err!("{name}: mode allow_reentry requires strict_order");
    }
    let ordered_only = mode.strict_deduplication
        || mode.strict_order
        || mode.strict_increase
        || mode.strict_once
        || !mode.exclusions.is_empty();
    if mode.unordered && ordered_only {
        return plan_err!(
            "{name}: mode unordered takes no other mode: the strict modes and exclusions are about the steps' order"
        );
    }
    if mode.strict_once && !mode.exclusions.is_empty() {
        return plan_err!("{name}: exclusions do not combine with strict_once");
    }
    Ok(mode)
}

/// `exclude(c:a-b)`.
fn parse_exclusion(text: &str) -> Option<Exclusion> {
    let inner = text
        .strip_prefix("exclude")?
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let (cond, range) = inner.split_once(':')?;
    let (from, to) = range.split_once('-')?;
    Some(Exclusion {
        cond: cond.trim().parse().ok()?,
        from: from.trim().parse().ok()?,
        to: to.trim().parse().ok()?,
    })
}

/// The number of steps of a funnel with `conditions` conditions under `mode`: the conditions
/// its exclusions name are the last ones and are not steps; each names a range of steps.
pub fn step_count(name: &str, mode: &Mode, conditions: usize) -> Result<u8> {
    let exclusions = mode.exclusions.as_slice();
    let steps = conditions - exclusions.len().min(conditions);
    for exclusion in exclusions {
        let cond = exclusion.cond as usize;
        if cond <= steps || cond > conditions {
            return plan_err!(
                "{name}: exclusion condition {cond} must be one of the last {} conditions (after the {steps} steps), the ones exclusions name",
                exclusions.len()
            );
        }
        if exclusions
            .iter()
            .filter(|e| e.cond == exclusion.cond)
            .count()
            > 1
        {
            return plan_err!("{name}: condition {cond} is named by two exclusions");
        }
        if !(1 <= exclusion.from && exclusion.from < exclusion.to && exclusion.to as usize <= steps)
        {
            return plan_err!(
                "{name}: exclusion {cond} between steps {} and {}: the steps must be 1 <= a < b <= {steps}",
                exclusion.from,
                exclusion.to
            );
        }
    }
    Ok(steps as u8)
}

impl AggregateUDFImpl for WindowFunnel {
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn name(&self) -> &str {
        if self.steps_output {
            "window_funnel_steps"
        } else {
            "window_funnel"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let layout = Layout::from_types(self.name(), arg_types, self.packed)?;
        Ok(if self.steps_output {
            DataType::List(Arc::new(Field::new_list_field(layout.ts_type, true)))
        } else {
            DataType::UInt8
        })
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        Ok(match data_type {
            DataType::List(field) => {
                ScalarValue::List(ScalarValue::new_list_nullable(&[], field.data_type()))
            }
            _ => ScalarValue::UInt8(Some(0)),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(accumulator::state_fields(args.name)
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(FunnelGroupsAccumulator::new(
            self.funnel_args(&args)?,
        ))?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroupsAccumulator::new(
            self.funnel_args(&args)?,
        )))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let steps_output = self.steps_output;
        self.packed.is_none().then(|| {
            Box::new(move |call: AggregateFunction, info: &SimplifyContext| {
                // Conditions follow the event time, which follows the optional mode string.
                let with_mode = call
                    .params
                    .args
                    .get(1)
                    .and_then(|mode| info.get_data_type(mode).ok())
                    .is_some_and(|t| is_string(&t));
                let first = if with_mode { 3 } else { 2 };
                pack_conditions(call, first, info, |n| {
                    AggregateUDF::from(WindowFunnel::with_packing(steps_output, Some(n)))
                })
            }) as _
        })
    }
}

impl WindowFunnel {
    fn funnel_args(&self, args: &AccumulatorArgs) -> Result<Arc<FunnelArgs>> {
        let name = self.name();
        let types = crate::common::argument_types(args);
        let layout = Layout::from_types(name, &types, self.packed)?;
        let mut mode = if layout.ts_index == 2 {
            parse_mode(name, constant_string(name, args, 1, "mode")?)?
        } else {
            Mode::default()
        };
        let steps = step_count(name, &mode, layout.steps)?;
        let window = constant(name, args, 0, "window")?;
        let window = funnel_window(name, window, &layout.ts_type, steps, &mut mode)?;
        Ok(Arc::new(FunnelArgs {
            steps,
            window,
            mode,
            want_chain: self.steps_output,
            ts_index: layout.ts_index,
            ts_type: layout.ts_type,
        }))
    }
}
