//! `window_funnel_breakdown`: the funnel level of each group with the value of a property that
//! the funnel is broken down by, attributed as PostHog does.
//!
//! ```sql
//! window_funnel_breakdown(window, [mode,] attribution, ts, property, cond1, ..., condN)
//!   -> Struct<level UInt8, value Utf8>
//! ```
//!
//! `window`, `mode`, `ts` and the conditions are `window_funnel`'s, and `level` is exactly the
//! level `window_funnel` gives. The chain that reached it is the one `window_funnel_steps`
//! reports; `value` is `property` of one of its events, as `attribution` says:
//!
//! - `'first_touch'`: the event of step 1;
//! - `'last_touch'`: the event of the last step reached;
//! - `'step(k)'`: the event of step k (NULL when the level is below k).
//!
//! The chain is found over all of the user's events whatever their property, so one user's
//! conversion is never split across values: each user counts once, under one value. A user at
//! level 0 has value NULL, and so has a chain event whose property is NULL. Events at equal
//! times are taken in property order (bytewise, NULL first), so the value never depends on the
//! order rows arrive in; of two events at the same time meeting the same step, the chain takes
//! the later in that order, as it takes the later of two step events at different times.
//!
//! ```sql
//! -- Conversion by the campaign that brought each user to the first step.
//! SELECT f['value'] AS campaign, count(*) AS users,
//!        count(*) FILTER (WHERE f['level'] = 3) AS converted
//! FROM (SELECT window_funnel_breakdown(INTERVAL '1 day', 'first_touch', ts, campaign,
//!              event = 'page_view', event = 'add_to_cart', event = 'purchase') AS f
//!       FROM events GROUP BY user_id)
//! WHERE f['level'] > 0 GROUP BY campaign ORDER BY users DESC;
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, StructArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use super::level::{self, Event, Mode, Scratch};
use super::{funnel_window, is_window_type, parse_mode, step_count};
use crate::common::{constant, constant_string, is_string};
use crate::conditions::check_conditions;
use crate::time::is_event_time;
use crate::value_events::{
    EventArguments, ValueEvent, ValueEventAggregate, ValueEventFunction, ValueEventUdaf, value_of,
};

const NAME: &str = "window_funnel_breakdown";
const USAGE: &str =
    "window_funnel_breakdown(window, [mode,] attribution, ts, property, cond1, ..., condN)";

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(ValueEventUdaf::<
        WindowFunnelBreakdown,
    >::new()))]
}

fn fields() -> Fields {
    Fields::from(vec![
        Field::new("level", DataType::UInt8, false),
        Field::new("value", DataType::Utf8, true),
    ])
}

/// Positions of the arguments, from their types.
struct Layout {
    mode: Option<usize>,
    attribution: usize,
    ts: usize,
    steps: usize,
}

impl Layout {
    fn from_types(types: &[DataType]) -> Result<Self> {
        if types.len() < 5 {
            return plan_err!(
                "{NAME} needs a window, an attribution, a timestamp, a property and at least one condition: {USAGE}"
            );
        }
        if !is_window_type(&types[0]) {
            return plan_err!(
                "{NAME}: the window must be an INTERVAL or an integer, or a list of them (one per step after the first), got {}: {USAGE}",
                types[0]
            );
        }
        let (mode, attribution) = match (is_string(&types[1]), is_string(&types[2])) {
            (true, true) => (Some(1), 2),
            (true, false) => (None, 1),
            _ => {
                return plan_err!(
                    "{NAME}: argument 2 must be the attribution ('first_touch', 'last_touch' or 'step(k)') or a mode, got {}: {USAGE}",
                    types[1]
                );
            }
        };
        let ts = attribution + 1;
        if !is_event_time(&types[ts]) {
            return plan_err!(
                "{NAME}: the event time (argument {}) must be a timestamp, date or integer, got {}: {USAGE}",
                ts + 1,
                types[ts]
            );
        }
        let property = ts + 1;
        if !is_string(&types[property]) && types[property] != DataType::Null {
            return plan_err!(
                "{NAME}: the property (argument {}) must be a string, got {}; cast it to text",
                property + 1,
                types[property]
            );
        }
        let conditions = types.get(property + 1..).unwrap_or_default();
        if conditions.is_empty() {
            return plan_err!("{NAME} needs at least one condition: {USAGE}");
        }
        Ok(Self {
            mode,
            attribution,
            ts,
            steps: check_conditions(NAME, conditions, None)?,
        })
    }
}

/// Whose property a user's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    FirstTouch,
    LastTouch,
    /// The 1-based step.
    Step(usize),
}

fn parse_attribution(text: &str, steps: usize) -> Result<Attribution> {
    let text = text.trim();
    match text {
        "first_touch" => return Ok(Attribution::FirstTouch),
        "last_touch" => return Ok(Attribution::LastTouch),
        _ => {}
    }
    let step = text
        .strip_prefix("step(")
        .and_then(|rest| rest.strip_suffix(')'))
        .map(|k| k.trim().parse::<usize>());
    match step {
        Some(Ok(k)) if (1..=steps).contains(&k) => Ok(Attribution::Step(k)),
        Some(_) => plan_err!(
            "{NAME}: attribution '{text}' names no step of this funnel (steps 1 to {steps})"
        ),
        None => plan_err!(
            "{NAME}: unknown attribution '{text}' (attributions: 'first_touch', 'last_touch', 'step(k)')"
        ),
    }
}

/// The aggregate: see the module documentation.
struct WindowFunnelBreakdown;

impl ValueEventAggregate for WindowFunnelBreakdown {
    type Function = Spec;

    const NAME: &'static str = NAME;

    const NULLABLE: bool = false;

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        Layout::from_types(arg_types)?;
        Ok(DataType::Struct(fields()))
    }

    fn function(args: &AccumulatorArgs) -> Result<Spec> {
        let types = crate::common::argument_types(args);
        let layout = Layout::from_types(&types)?;
        let mut mode = match layout.mode {
            Some(index) => parse_mode(NAME, constant_string(NAME, args, index, "mode")?)?,
            None => Mode::default(),
        };
        let steps = step_count(NAME, &mode, layout.steps)?;
        let window = constant(NAME, args, 0, "window")?;
        let window = funnel_window(NAME, window, &types[layout.ts], steps, &mut mode)?;
        let attribution = parse_attribution(
            constant_string(NAME, args, layout.attribution, "attribution")?,
            steps as usize,
        )?;
        let property = layout.ts + 1;
        Ok(Spec {
            window,
            mode,
            attribution,
            steps,
            arguments: EventArguments {
                ts: layout.ts,
                value: property,
                conditions: property + 1..property + 1 + layout.steps,
                null_values: true,
            },
        })
    }
}

/// One call's funnel and attribution.
pub struct Spec {
    window: i64,
    mode: Mode,
    attribution: Attribution,
    steps: u8,
    arguments: EventArguments,
}

impl Spec {
    /// The level, and the index in `events` (sorted) of the event the value comes from.
    fn attributed(
        &self,
        events: &[ValueEvent],
        matches: &mut Vec<Event>,
        chain: &mut Vec<Event>,
        scratch: &mut Scratch,
    ) -> (u8, Option<usize>) {
        matches.clear();
        for (row, event) in events.iter().enumerate() {
            let row = row as u32;
            if event.mask == 0 {
                // A row meeting no step matters only where it breaks a chain.
                if self.mode.strict_order {
                    matches.push(Event {
                        ts: event.ts,
                        cond: 0,
                        row,
                    });
                }
                continue;
            }
            let mut mask = event.mask;
            while mask != 0 {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                matches.push(Event {
                    ts: event.ts,
                    cond: bit as u8 + 1,
                    row,
                });
            }
        }
        // Rows are in (time, value) order already: ties between steps at one time go by
        // condition, then by that order.
        matches.sort_unstable_by_key(|e| (e.ts, e.cond, e.row));
        chain.clear();
        let level = level::evaluate_into(
            matches,
            self.steps,
            self.window,
            self.mode,
            scratch,
            Some(chain),
        );
        let step = match self.attribution {
            Attribution::FirstTouch => chain.first(),
            Attribution::LastTouch => chain.last(),
            // Unordered, the chain is in time order: step k's event is the one meeting it.
            Attribution::Step(k) if self.mode.unordered => {
                chain.iter().find(|e| e.cond as usize == k)
            }
            Attribution::Step(k) => chain.get(k - 1),
        };
        (level, step.map(|e| e.row as usize))
    }
}

impl ValueEventFunction for Spec {
    fn arguments(&self) -> &EventArguments {
        &self.arguments
    }

    fn evaluate(&self, groups: &[Vec<ValueEvent>], values: &[String]) -> Result<ArrayRef> {
        let (mut matches, mut chain, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
        let mut levels = Vec::with_capacity(groups.len());
        let mut attributed = StringBuilder::new();
        for events in groups {
            let (level, source) = self.attributed(events, &mut matches, &mut chain, &mut scratch);
            levels.push(level);
            attributed.append_option(source.and_then(|i| value_of(values, events[i].value)));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt8Array::from(levels)),
            Arc::new(attributed.finish()),
        ];
        Ok(Arc::new(StructArray::try_new(fields(), columns, None)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributions_parse_and_name_their_errors() {
        assert_eq!(
            parse_attribution(" first_touch ", 3).unwrap(),
            Attribution::FirstTouch
        );
        assert_eq!(
            parse_attribution("last_touch", 3).unwrap(),
            Attribution::LastTouch
        );
        assert_eq!(
            parse_attribution("step( 2 )", 3).unwrap(),
            Attribution::Step(2)
        );
        let error = parse_attribution("step(4)", 3).unwrap_err().to_string();
        assert!(
            error.contains("names no step of this funnel (steps 1 to 3)"),
            "{error}"
        );
        let error = parse_attribution("first", 3).unwrap_err().to_string();
        assert!(error.contains("unknown attribution 'first'"), "{error}");
    }
}
