//! `sequence_next_node`: what users do right after (or right before) a chain of events.
//! ClickHouse's `sequenceNextNode(direction, base)(ts, event_column, base_cond, event1, ...)`.
//!
//! ```sql
//! sequence_next_node(direction, base, ts, event_column, base_cond, event1, ..., eventN) -> Utf8
//! ```
//!
//! A group's events are its rows, ordered by `ts` and, at equal times, by `event_column`'s value
//! (bytewise, as ClickHouse orders them), then by the conditions they meet, so the answer never
//! depends on the order rows arrive in. One event is the *base*:
//!
//! - `'head'`: the first event, if it meets `base_cond` (direction `'forward'` only);
//! - `'tail'`: the last event, if it meets `base_cond` (direction `'backward'` only);
//! - `'first_match'` / `'last_match'`: the first / last event meeting both `base_cond` and
//!   `event1` (at least one event condition is then required).
//!
//! From the base the events must meet `event1`, `event2`, ... one after the other: going forward
//! (later events) or backward (earlier ones) as `direction` says, with no other event between
//! them. The result is `event_column` of the event after the chain in that direction; NULL when
//! there is no base, the chain breaks, or no event follows it. Without event conditions the
//! result is the base's own value.
//!
//! Rows with NULL `ts` or NULL `event_column` are not events (as in ClickHouse, which skips rows
//! with NULL arguments); NULL conditions are false. At most 31 event conditions.
//!
//! ```sql
//! -- Where do users go right after the pricing page?
//! SELECT next, count(*) FROM (
//!   SELECT user_id, sequence_next_node('forward', 'first_match', ts, page, true,
//!                                      page = 'pricing') AS next
//!   FROM page_views GROUP BY user_id)
//! GROUP BY next ORDER BY count(*) DESC;
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::{constant_string, is_string};
use crate::conditions::{check_boolean, check_conditions};
use crate::time::check_event_time;
use crate::value_events::{
    EventArguments, ValueEvent, ValueEventAggregate, ValueEventFunction, ValueEventUdaf,
};

const NAME: &str = "sequence_next_node";
const USAGE: &str =
    "sequence_next_node(direction, base, ts, event_column, base_cond, event1, ..., eventN)";
const TS: usize = 2;
const VALUE: usize = 3;
const BASE_CONDITION: usize = 4;
/// Bit 0 of an event's mask is the base condition, bit i the event condition i.
const MAX_EVENTS: usize = 31;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(ValueEventUdaf::<
        SequenceNextNode,
    >::new()))]
}

/// The aggregate: see the module documentation.
struct SequenceNextNode;

impl ValueEventAggregate for SequenceNextNode {
    type Function = Call;

    const NAME: &'static str = NAME;

    /// No base, a broken chain or nothing after it.
    const NULLABLE: bool = true;

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        check_types(arg_types)?;
        Ok(DataType::Utf8)
    }

    fn function(args: &AccumulatorArgs) -> Result<Call> {
        let spec = spec(args)?;
        Ok(Call {
            spec,
            arguments: EventArguments {
                ts: TS,
                value: VALUE,
                conditions: BASE_CONDITION..BASE_CONDITION + 1 + spec.events,
                null_values: false,
            },
        })
    }
}

/// One call: what it asks and where its arguments are.
struct Call {
    spec: Spec,
    arguments: EventArguments,
}

impl ValueEventFunction for Call {
    fn arguments(&self) -> &EventArguments {
        &self.arguments
    }

    fn evaluate(&self, groups: &[Vec<ValueEvent>], values: &[String]) -> Result<ArrayRef> {
        let mut out = StringBuilder::new();
        for events in groups {
            let keyed: Vec<(i64, u32)> = events.iter().map(|e| (e.ts, e.mask)).collect();
            match next_index(&keyed, self.spec) {
                Some(i) => out.append_value(&values[events[i].value as usize]),
                None => out.append_null(),
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Head,
    Tail,
    FirstMatch,
    LastMatch,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub direction: Direction,
    pub base: Base,
    /// Number of event conditions.
    pub events: usize,
}

fn check_types(types: &[DataType]) -> Result<usize> {
    if types.len() < 5 {
        return plan_err!("{NAME} takes at least 5 arguments: {USAGE}");
    }
    check_event_time(NAME, types, TS)?;
    if !is_string(&types[VALUE]) && types[VALUE] != DataType::Null {
        return plan_err!(
            "{NAME}: the event column (argument 4) must be a string, got {}",
            types[VALUE]
        );
    }
    check_boolean(NAME, "base condition", types, BASE_CONDITION)?;
    let events = &types[BASE_CONDITION + 1..];
    if events.len() > MAX_EVENTS {
        return plan_err!(
            "{NAME} takes at most {MAX_EVENTS} event conditions, got {}",
            events.len()
        );
    }
    check_conditions(NAME, events, None)
}

fn spec(args: &AccumulatorArgs) -> Result<Spec> {
    let types = crate::common::argument_types(args);
    let events = check_types(&types)?;
    let direction = match constant_string(NAME, args, 0, "direction")?.trim() {
        "forward" => Direction::Forward,
        "backward" => Direction::Backward,
        other => {
            return plan_err!(
                "{NAME}: unknown direction '{other}' (directions: forward, backward)"
            );
        }
    };
    let base = match constant_string(NAME, args, 1, "base")?.trim() {
        "head" => Base::Head,
        "tail" => Base::Tail,
        "first_match" => Base::FirstMatch,
        "last_match" => Base::LastMatch,
        other => {
            return plan_err!(
                "{NAME}: unknown base '{other}' (bases: head, tail, first_match, last_match)"
            );
        }
    };
    match (direction, base) {
        (Direction::Backward, Base::Head) => {
            return plan_err!(
                "{NAME}: base 'head' goes with direction 'forward' only (the first event has nothing before it)"
            );
        }
        (Direction::Forward, Base::Tail) => {
            return plan_err!(
                "{NAME}: base 'tail' goes with direction 'backward' only (the last event has nothing after it)"
            );
        }
        (_, Base::FirstMatch | Base::LastMatch) if events == 0 => {
            return plan_err!(
                "{NAME}: base 'first_match' and 'last_match' need at least one event condition, the one the base matches"
            );
        }
        _ => {}
    }
    Ok(Spec {
        direction,
        base,
        events,
    })
}

/// Where the chain's next event is in `events` (sorted), if anywhere.
pub fn next_index(events: &[(i64, u32)], spec: Spec) -> Option<usize> {
    const BASE: u32 = 1;
    let step = |i: usize| 1u32 << (i + 1);
    let meets_base = |e: &(i64, u32)| e.1 & BASE != 0;
    let can_start = |e: &(i64, u32)| meets_base(e) && e.1 & step(0) != 0;
    let base = match spec.base {
        Base::Head => Some(0).filter(|_| events.first().is_some_and(meets_base)),
        Base::Tail => events
            .len()
            .checked_sub(1)
            .filter(|&i| meets_base(&events[i])),
        Base::FirstMatch => events.iter().position(can_start),
        Base::LastMatch => events.iter().rposition(can_start),
    }?;
    let at = |offset: usize| match spec.direction {
        Direction::Forward => base.checked_add(offset).filter(|&i| i < events.len()),
        Direction::Backward => base.checked_sub(offset),
    };
    for i in 0..spec.events {
        if events[at(i)?].1 & step(i) == 0 {
            return None;
        }
    }
    at(spec.events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u32 = 1;
    const E1: u32 = 2;
    const E2: u32 = 4;

    fn spec(direction: Direction, base: Base, events: usize) -> Spec {
        Spec {
            direction,
            base,
            events,
        }
    }

    #[test]
    fn forward_from_the_head() {
        let events = [(1, B | E1), (2, E2), (3, 0), (4, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::Head, 2)),
            Some(2)
        );
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::Head, 0)),
            Some(0)
        );
        // The chain is adjacent events: E2 is not right after E1 here.
        let gap = [(1, B | E1), (2, 0), (3, E2), (4, 0)];
        assert_eq!(
            next_index(&gap, spec(Direction::Forward, Base::Head, 2)),
            None
        );
        // The head must meet the base condition; nothing after the chain is no answer.
        assert_eq!(
            next_index(&[(1, E1), (2, 0)], spec(Direction::Forward, Base::Head, 1)),
            None
        );
        assert_eq!(
            next_index(&[(1, B | E1)], spec(Direction::Forward, Base::Head, 1)),
            None
        );
    }

    #[test]
    fn matches_take_the_first_or_last_base_without_retrying() {
        // Bases at 0 and 2; from 0 the chain breaks, from 2 it holds.
        let events = [(1, B | E1), (2, 0), (3, B | E1), (4, E2), (5, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::FirstMatch, 2)),
            None
        );
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::LastMatch, 2)),
            Some(4)
        );
        // An event meeting event1 but not the base condition is no base.
        let events = [(1, E1), (2, 0), (3, B | E1), (4, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::FirstMatch, 1)),
            Some(3)
        );
    }

    #[test]
    fn backward_from_the_tail_and_from_matches() {
        let events = [(1, 0), (2, E2), (3, B | E1)];
        assert_eq!(
            next_index(&events, spec(Direction::Backward, Base::Tail, 2)),
            Some(0)
        );
        assert_eq!(
            next_index(&events, spec(Direction::Backward, Base::LastMatch, 1)),
            Some(1)
        );
        // The first event has nothing before it.
        assert_eq!(
            next_index(
                &[(1, B | E1), (2, 0)],
                spec(Direction::Backward, Base::FirstMatch, 1)
            ),
            None
        );
        assert_eq!(
            next_index(&[], spec(Direction::Backward, Base::Tail, 0)),
            None
        );
    }
}
