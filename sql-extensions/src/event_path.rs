//! `event_path`: the sequence of events a user went through, for path analysis.
//!
//! ```sql
//! event_path(ts, event, max_steps [, start_cond] [, 'dedupe']) -> List<Utf8>
//! ```
//!
//! A group's events are its rows with a non-NULL `ts` and `event`, ordered by `ts` and, at
//! equal times, by `event`'s value (bytewise), so the path never depends on the order rows
//! arrive in. The path begins at the first event meeting `start_cond` (a NULL condition is
//! false; without `start_cond`, at the first event) and holds the values of at most
//! `max_steps` events from there (1 to 1000). With `'dedupe'`, consecutive repeats of a value
//! count once (`home, home, cart` is `home, cart`), as PostHog's paths collapse page reloads.
//! A group with no event meeting `start_cond` has an empty path; the result is never NULL.
//!
//! `path_edges` (in `path_edges.rs`) turns a column of paths into the weighted edges of a
//! Sankey diagram:
//!
//! ```sql
//! SELECT * FROM path_edges((
//!   SELECT event_path(ts, event, 5, event = 'signup', 'dedupe') FROM events GROUP BY user_id));
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::{constant_count, constant_string, is_string, list_column};
use crate::conditions::check_boolean;
use crate::time::check_event_time;
use crate::value_events::{
    EventArguments, ValueEvent, ValueEventAggregate, ValueEventFunction, ValueEventUdaf,
};

const NAME: &str = "event_path";
const USAGE: &str = "event_path(ts, event, max_steps [, start_cond] [, 'dedupe'])";
const TS: usize = 0;
const VALUE: usize = 1;
const MAX_STEPS: usize = 2;
/// Longest path a call may ask for: paths are read by people, and every group holds one.
pub const MAX_PATH_STEPS: i64 = 1000;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(
        ValueEventUdaf::<EventPath>::new(),
    ))]
}

pub fn return_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false)))
}

/// Where a call's optional arguments are: a start condition and the `'dedupe'` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Optional {
    start_condition: Option<usize>,
    option: Option<usize>,
}

fn check_types(types: &[DataType]) -> Result<Optional> {
    if !(3..=5).contains(&types.len()) {
        return plan_err!(
            "{NAME} takes 3 to 5 arguments, got {}: {USAGE}",
            types.len()
        );
    }
    check_event_time(NAME, types, TS)?;
    if !is_string(&types[VALUE]) && types[VALUE] != DataType::Null {
        return plan_err!(
            "{NAME}: the event (argument 2) must be a string, got {}",
            types[VALUE]
        );
    }
    if !types[MAX_STEPS].is_integer() {
        return plan_err!(
            "{NAME}: max_steps (argument 3) must be an integer from 1 to {MAX_PATH_STEPS}, got {}",
            types[MAX_STEPS]
        );
    }
    let optional = match &types[3..] {
        [] => Optional {
            start_condition: None,
            option: None,
        },
        [only] if is_string(only) => Optional {
            start_condition: None,
            option: Some(3),
        },
        [_] => Optional {
            start_condition: Some(3),
            option: None,
        },
        [_, _] => Optional {
            start_condition: Some(3),
            option: Some(4),
        },
        _ => unreachable!("checked: 3 to 5 arguments"),
    };
    if let Some(index) = optional.start_condition {
        check_boolean(NAME, "start condition", types, index)?;
    }
    if let Some(index) = optional.option
        && !is_string(&types[index])
    {
        return plan_err!(
            "{NAME}: argument {} must be the option 'dedupe', got {}",
            index + 1,
            types[index]
        );
    }
    Ok(optional)
}

/// The aggregate: see the module documentation.
struct EventPath;

impl ValueEventAggregate for EventPath {
    type Function = Spec;

    const NAME: &'static str = NAME;

    const NULLABLE: bool = false;

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        check_types(arg_types)?;
        Ok(return_type())
    }

    fn function(args: &AccumulatorArgs) -> Result<Spec> {
        let types = crate::common::argument_types(args);
        let optional = check_types(&types)?;
        let max_steps = constant_count(NAME, args, MAX_STEPS, "max_steps", MAX_PATH_STEPS)?;
        let dedupe = match optional.option {
            None => false,
            Some(index) => match constant_string(NAME, args, index, "option")?.trim() {
                "dedupe" => true,
                other => {
                    return plan_err!("{NAME}: unknown option '{other}' (options: 'dedupe')");
                }
            },
        };
        let conditions = match optional.start_condition {
            Some(index) => index..index + 1,
            None => 0..0,
        };
        Ok(Spec {
            max_steps,
            dedupe,
            has_start_condition: optional.start_condition.is_some(),
            arguments: EventArguments {
                ts: TS,
                value: VALUE,
                conditions,
                null_values: false,
            },
        })
    }
}

/// One call's path rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub max_steps: usize,
    pub dedupe: bool,
    /// Whether bit 0 of an event's mask says it may start the path; else every event may.
    pub has_start_condition: bool,
    arguments: EventArguments,
}

impl Spec {
    /// The path through `events` (sorted), as indexes into them.
    pub fn path(&self, events: &[ValueEvent]) -> Vec<usize> {
        let start = if self.has_start_condition {
            events.iter().position(|e| e.mask & 1 != 0)
        } else {
            Some(0)
        };
        let mut path: Vec<usize> = Vec::new();
        let Some(start) = start else {
            return path;
        };
        for (index, event) in events.iter().enumerate().skip(start) {
            if path.len() == self.max_steps {
                break;
            }
            let repeat = path
                .last()
                .is_some_and(|&last| events[last].value == event.value);
            if !(self.dedupe && repeat) {
                path.push(index);
            }
        }
        path
    }
}

impl ValueEventFunction for Spec {
    fn arguments(&self) -> &EventArguments {
        &self.arguments
    }

    fn evaluate(&self, groups: &[Vec<ValueEvent>], values: &[String]) -> Result<ArrayRef> {
        let mut lengths = Vec::with_capacity(groups.len());
        let mut items = StringBuilder::new();
        for events in groups {
            let path = self.path(events);
            for &index in &path {
                items.append_value(&values[events[index].value as usize]);
            }
            lengths.push(path.len());
        }
        list_column(
            OffsetBuffer::from_lengths(lengths),
            Arc::new(items.finish()),
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_steps: usize, dedupe: bool, has_start_condition: bool) -> Spec {
        Spec {
            max_steps,
            dedupe,
            has_start_condition,
            arguments: EventArguments {
                ts: TS,
                value: VALUE,
                conditions: 0..0,
                null_values: false,
            },
        }
    }

    /// Events at times 1, 2, ... with these values and masks.
    fn events(values_and_masks: &[(u32, u32)]) -> Vec<ValueEvent> {
        values_and_masks
            .iter()
            .enumerate()
            .map(|(i, &(value, mask))| ValueEvent {
                ts: i as i64 + 1,
                mask,
                value,
            })
            .collect()
    }

    #[test]
    fn a_path_starts_at_the_first_start_event_and_stops_at_max_steps() {
        let events = events(&[(0, 0), (1, 1), (2, 0), (1, 1), (3, 0)]);
        assert_eq!(spec(10, false, false).path(&events), vec![0, 1, 2, 3, 4]);
        assert_eq!(spec(10, false, true).path(&events), vec![1, 2, 3, 4]);
        assert_eq!(spec(2, false, true).path(&events), vec![1, 2]);
        assert!(spec(10, false, true).path(&events[..1]).is_empty());
        assert!(spec(10, false, false).path(&[]).is_empty());
    }

    #[test]
    fn dedupe_collapses_consecutive_repeats_before_counting_steps() {
        let events = events(&[(0, 0), (0, 0), (1, 0), (1, 0), (0, 0), (2, 0)]);
        assert_eq!(spec(10, true, false).path(&events), vec![0, 2, 4, 5]);
        assert_eq!(spec(3, true, false).path(&events), vec![0, 2, 4]);
        assert_eq!(spec(3, false, false).path(&events), vec![0, 1, 2]);
    }
}
