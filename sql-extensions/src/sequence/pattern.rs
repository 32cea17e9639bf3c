//! ClickHouse sequence patterns: `(?N)` an event meeting condition N, `.` any event, `.*` any
//! number of events, `(?t<=S)` / `(?t<S)` / `(?t>=S)` / `(?t>S)` / `(?t==S)` a time condition
//! between the events around it. Matching follows ClickHouse's `sequenceMatch`/`sequenceCount`:
//! a DFA for patterns without time conditions, otherwise a backtracking matcher bounded at
//! 1,000,000 steps.

use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;

/// Steps a backtracking match may take before the pattern is rejected as too costly.
const MAX_STEPS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Event(u32),
    Any,
    Star,
    /// Time conditions; the amount is already in event-time units.
    TimeLessOrEqual(i128),
    TimeLess(i128),
    TimeGreaterOrEqual(i128),
    TimeGreater(i128),
    TimeEqual(i128),
}

impl Action {
    fn is_deterministic(self) -> bool {
        matches!(self, Action::Event(_) | Action::Any)
    }
}

#[derive(Debug, Clone)]
struct DfaState {
    star: bool,
    transition: Option<Option<u32>>,
}

#[derive(Debug, Clone)]
pub struct Pattern {
    actions: Vec<Action>,
    dfa: Vec<DfaState>,
    has_time: bool,
    /// Conditions the pattern names: a group that never met one of them cannot match.
    pub required: u32,
}

/// Events of one group: timestamp and the bitmask of conditions the row met.
pub type Entry = (i64, u32);

impl Pattern {
    /// Parses `text` for `conditions` conditions; `to_units` converts a time condition's
    /// seconds to event-time units.
    pub fn parse(
        name: &str,
        text: &str,
        conditions: usize,
        to_units: impl Fn(i128) -> i128,
    ) -> Result<Self> {
        let mut actions = vec![Action::Star];
        let mut dfa = vec![DfaState {
            star: true,
            transition: None,
        }];
        let mut required = 0u32;
        let mut has_time = false;
        let mut rest = text;
        let err = |rest: &str, message: &str| -> Result<Self> {
            let position = text.len() - rest.len();
            plan_err!("{name}: {message} at position {position} of pattern '{text}'")
        };
        fn number(rest: &str) -> Option<(u64, &str)> {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            rest[..digits].parse().ok().map(|n| (n, &rest[digits..]))
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("(?") {
                let after_value;
                if let Some(time) = after.strip_prefix('t') {
                    let (make, tail): (fn(i128) -> Action, &str) =
                        if let Some(t) = time.strip_prefix("<=") {
                            (Action::TimeLessOrEqual, t)
                        } else if let Some(t) = time.strip_prefix('<') {
                            (Action::TimeLess, t)
                        } else if let Some(t) = time.strip_prefix(">=") {
                            (Action::TimeGreaterOrEqual, t)
                        } else if let Some(t) = time.strip_prefix('>') {
                            (Action::TimeGreater, t)
                        } else if let Some(t) = time.strip_prefix("==") {
                            (Action::TimeEqual, t)
                        } else {
                            return err(time, "unknown time condition (use <=, <, >=, > or ==)");
                        };
                    let Some((seconds, tail)) = number(tail) else {
                        return err(tail, "expected a number of seconds");
                    };
                    if !actions
                        .last()
                        .is_some_and(|a| matches!(a, Action::Event(_) | Action::Any | Action::Star))
                    {
                        return err(after, "a time condition must follow an event, '.' or '.*'");
                    }
                    has_time = true;
                    actions.push(make(to_units(seconds as i128)));
                    after_value = tail;
                } else {
                    let Some((event, tail)) = number(after) else {
                        return err(after, "expected a condition number or t");
                    };
                    if event == 0 || event as usize > conditions {
                        return err(
                            after,
                            &format!(
                                "condition (?{event}) does not exist: conditions are numbered 1 to {conditions}"
                            ),
                        );
                    }
                    let index = event as u32 - 1;
                    actions.push(Action::Event(index));
                    dfa.last_mut().expect("initial state").transition = Some(Some(index));
                    dfa.push(DfaState {
                        star: false,
                        transition: None,
                    });
                    required |= 1 << index;
                    after_value = tail;
                }
                match after_value.strip_prefix(')') {
                    Some(tail) => rest = tail,
                    None => return err(after_value, "expected ')'"),
                }
            } else if let Some(tail) = rest.strip_prefix(".*") {
                actions.push(Action::Star);
                dfa.last_mut().expect("initial state").star = true;
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix('.') {
                actions.push(Action::Any);
                dfa.last_mut().expect("initial state").transition = Some(None);
                dfa.push(DfaState {
                    star: false,
                    transition: None,
                });
                rest = tail;
            } else {
                return err(rest, "unexpected character");
            }
        }
        Ok(Self {
            actions,
            dfa,
            has_time,
            required,
        })
    }

    /// Whether the (time-sorted) events contain the pattern.
    pub fn matches(&self, events: &[Entry]) -> Result<bool> {
        if self.has_time {
            Ok(self.could_match_deterministic_parts(events)? && self.backtrack(events, &mut 0)?)
        } else {
            Ok(self.dfa_match(events))
        }
    }

    /// How many non-overlapping times the pattern occurs, scanning left to right.
    pub fn count(&self, events: &[Entry]) -> Result<u64> {
        let mut count = 0;
        if self.could_match_deterministic_parts(events)? {
            let mut position = 0;
            while position < events.len() && self.backtrack(events, &mut position)? {
                count += 1;
            }
        }
        Ok(count)
    }

    fn dfa_match(&self, events: &[Entry]) -> bool {
        let states = self.dfa.len();
        let mut active = vec![false; states];
        let mut next = vec![false; states];
        active[0] = true;
        let mut alive = true;
        for &(_, mask) in events {
            if !alive || active[states - 1] {
                break;
            }
            next.iter_mut().for_each(|s| *s = false);
            alive = false;
            for state in 0..states {
                if !active[state] {
                    continue;
                }
                match self.dfa[state].transition {
                    Some(None) => {
                        next[state + 1] = true;
                        alive = true;
                    }
                    Some(Some(event)) if mask & (1 << event) != 0 => {
                        next[state + 1] = true;
                        alive = true;
                    }
                    _ => {}
                }
                if self.dfa[state].star {
                    next[state] = true;
                    alive = true;
                }
            }
            std::mem::swap(&mut active, &mut next);
        }
        active[states - 1]
    }

    /// Backtracking match starting at `*position`; leaves `*position` where matching stopped.
    fn backtrack(&self, events: &[Entry], position: &mut usize) -> Result<bool> {
        let end = events.len();
        let start = *position;
        let mut event = *position;
        let mut base = *position;
        let mut action = 0;
        let mut stack: Vec<(usize, usize, usize)> = Vec::new();
        let pop = |stack: &mut Vec<(usize, usize, usize)>,
                   action: &mut usize,
                   event: &mut usize,
                   base: &mut usize|
         -> bool {
            while let Some((a, e, b)) = stack.pop() {
                *action = a;
                *event = e + 1;
                *base = b;
                if *event != end {
                    return true;
                }
            }
            false
        };
        let mut steps = 0usize;
        while action < self.actions.len() && event < end {
            let (ts, mask) = events[event];
            let base_ts = events[base].0 as i128;
            let ts = ts as i128;
            match self.actions[action] {
                Action::Event(index) => {
                    if mask & (1 << index) != 0 {
                        base = event;
                        action += 1;
                        event += 1;
                    } else if !pop(&mut stack, &mut action, &mut event, &mut base) {
                        break;
                    }
                }
                Action::Any => {
                    base = event;
                    action += 1;
                    event += 1;
                }
                Action::Star => {
                    stack.push((action, event, base));
                    base = event;
                    action += 1;
                }
                Action::TimeLessOrEqual(d) | Action::TimeLess(d) => {
                    let ok = match self.actions[action] {
                        Action::TimeLessOrEqual(_) => ts <= base_ts + d,
                        _ => ts < base_ts + d,
                    };
                    if ok {
                        stack.push((action, event, base));
                        base = event;
                        action += 1;
                    } else if !pop(&mut stack, &mut action, &mut event, &mut base) {
                        break;
                    }
                }
                Action::TimeGreaterOrEqual(d) | Action::TimeGreater(d) | Action::TimeEqual(d) => {
                    let ok = match self.actions[action] {
                        Action::TimeGreaterOrEqual(_) => ts >= base_ts + d,
                        Action::TimeGreater(_) => ts > base_ts + d,
                        _ => ts == base_ts + d,
                    };
                    if ok {
                        stack.push((action, event, base));
                        base = event;
                        action += 1;
                    } else {
                        event += 1;
                        if event == end && !pop(&mut stack, &mut action, &mut event, &mut base) {
                            break;
                        }
                    }
                }
            }
            steps += 1;
            if steps > MAX_STEPS {
                return exec_err!(
                    "sequence pattern too costly to match: more than {MAX_STEPS} steps for one group"
                );
            }
        }
        // Actions that can match nothing may remain at the end.
        while action < self.actions.len()
            && matches!(
                self.actions[action],
                Action::Star
                    | Action::TimeLessOrEqual(_)
                    | Action::TimeLess(_)
                    | Action::TimeGreaterOrEqual(0)
            )
        {
            action += 1;
        }
        if event == start {
            event += 1;
        }
        *position = event;
        Ok(action == self.actions.len())
    }

    /// Quick rejection: the runs of `(?N)`/`.` between other actions must occur in order.
    fn could_match_deterministic_parts(&self, events: &[Entry]) -> Result<bool> {
        let mut processed = 0usize;
        let mut event = 0usize;
        let mut part_begin = 0usize;
        let mut match_part = |part: &[Action], event: &mut usize| -> Result<bool> {
            let mut restart = *event;
            let mut i = 0;
            while i < part.len() && *event < events.len() {
                match part[i] {
                    Action::Any => {
                        *event += 1;
                        i += 1;
                    }
                    Action::Event(index) => {
                        if events[*event].1 & (1 << index) != 0 {
                            *event += 1;
                            i += 1;
                        } else {
                            restart += 1;
                            *event = restart;
                            i = 0;
                        }
                    }
                    _ => unreachable!("parts hold only deterministic actions"),
                }
                processed += 1;
                if processed > MAX_STEPS {
                    return exec_err!(
                        "sequence pattern too costly to match: more than {MAX_STEPS} steps for one group"
                    );
                }
            }
            Ok(i == part.len())
        };
        for (index, action) in self.actions.iter().enumerate() {
            if !action.is_deterministic() {
                if !match_part(&self.actions[part_begin..index], &mut event)? {
                    return Ok(false);
                }
                part_begin = index + 1;
            }
        }
        match_part(&self.actions[part_begin..], &mut event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pattern> {
        Pattern::parse("sequence_match", text, 3, |s| s)
    }

    fn ev(items: &[(i64, u32)]) -> Vec<Entry> {
        items.iter().map(|&(t, c)| (t, 1 << (c - 1))).collect()
    }

    #[test]
    fn parses_and_rejects() {
        assert!(parse("(?1).*(?2)(?t<=10)(?3)").is_ok());
        assert!(parse("(?1)(?t>=0).(?2)").is_ok());
        for (bad, message) in [
            ("(?4)", "condition (?4) does not exist"),
            ("(?0)", "condition (?0) does not exist"),
            ("(?1", "expected ')'"),
            ("(?t<=5)(?t<=5)", "a time condition must follow"),
            ("(?1)(?t~5)", "unknown time condition"),
            ("(?1)(?t<=x)", "expected a number of seconds"),
            ("abc", "unexpected character"),
            ("(?x)", "expected a condition number"),
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn matches_and_counts() {
        let p = parse("(?1)(?2)").unwrap();
        assert!(p.matches(&ev(&[(1, 1), (2, 2)])).unwrap());
        assert!(!p.matches(&ev(&[(1, 1), (2, 3), (3, 2)])).unwrap());
        let p = parse("(?1).*(?2)").unwrap();
        assert!(p.matches(&ev(&[(1, 1), (2, 3), (3, 2)])).unwrap());
        assert_eq!(
            p.count(&ev(&[(1, 1), (2, 2), (3, 1), (4, 3), (5, 2)]))
                .unwrap(),
            2
        );
        let p = parse("(?1)(?t<=2)(?2)").unwrap();
        assert!(p.matches(&ev(&[(1, 1), (3, 2)])).unwrap());
        assert!(!p.matches(&ev(&[(1, 1), (4, 2)])).unwrap());
        let p = parse("(?1)(?t>3)(?2)").unwrap();
        assert!(p.matches(&ev(&[(1, 1), (5, 2)])).unwrap());
        assert!(!p.matches(&ev(&[(1, 1), (4, 2)])).unwrap());
    }
}
