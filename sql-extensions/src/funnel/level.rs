//! The funnel level of one group's events, with ClickHouse `windowFunnel` semantics.
//!
//! Events are ordered by (timestamp, condition index) — and, in `strict_once` mode, by the row
//! they came from — then scanned once. A chain starts at any step-1 event and extends from step
//! k to k+1 when the step-(k+1) event is at most `window` after the chain's *first* event.
//! Modes change the scan exactly as ClickHouse 26 does:
//! - `strict_deduplication`: a repeated step (one already reached) ends the scan;
//! - `strict_order`: any other event (a row matching no condition, or a step whose predecessor
//!   was never reached) after the first step ends the scan; with `allow_reentry` the latter is
//!   skipped instead;
//! - `strict_increase`: a step must be strictly later than the previous step of its chain;
//! - `strict_once`: one row counts at most once in a chain even when it matches several steps.
//!
//! Exclusions (Cohort's, after PostHog's exclusion steps) are conditions numbered after the
//! steps: an exclusion event strictly later than a chain's step-`from` event, while that chain
//! has not reached step `to`, breaks the chain. A broken chain keeps the level it reached but
//! goes no further; another chain may. At equal times steps are taken before exclusions, so an
//! exclusion at the time of step `to` comes too late to break a chain that reaches it then.

/// One condition match: `cond` is the 1-based condition index, or 0 for a row that matched none
/// (recorded only in `strict_order` mode); `row` identifies the source row within the group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    pub ts: i64,
    pub cond: u8,
    pub row: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    pub strict_deduplication: bool,
    pub strict_order: bool,
    pub strict_increase: bool,
    pub strict_once: bool,
    pub allow_reentry: bool,
    /// Cohort's: the steps in any order within the window.
    pub unordered: bool,
    pub exclusions: Exclusions,
    /// Cohort's: when set, step k + 1 must come at most `step_windows[k - 1]` after step k
    /// (inclusive) instead of within the one window of step 1.
    pub step_windows: StepWindows,
}

/// Most steps a funnel has (conditions are a 32-bit mask).
pub const MAX_STEPS: usize = 32;

/// One window per step transition, in the event time's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWindows {
    windows: [i64; MAX_STEPS - 1],
    len: u8,
}

impl Default for StepWindows {
    fn default() -> Self {
        Self {
            windows: [0; MAX_STEPS - 1],
            len: 0,
        }
    }
}

impl StepWindows {
    /// The windows of `windows.len() + 1` steps; `None` past [`MAX_STEPS`].
    pub fn new(windows: &[i64]) -> Option<Self> {
        let mut out = Self::default();
        out.windows
            .get_mut(..windows.len())?
            .copy_from_slice(windows);
        out.len = windows.len() as u8;
        Some(out)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }
}

/// Whether an event at `ts` may be step `step` (0-based, > 0) of a chain whose first event is
/// at `first` and whose step `step - 1` is at `previous`.
fn extends(ts: i64, step: usize, first: i64, previous: i64, window: i64, mode: &Mode) -> bool {
    if mode.step_windows.is_empty() {
        within_window(ts, first, window)
    } else {
        within_window(ts, previous, mode.step_windows.windows[step - 1])
    }
}

/// Most exclusions one funnel may have.
pub const MAX_EXCLUSIONS: usize = 8;

/// One exclusion: condition `cond` (1-based, after the steps) between steps `from` and `to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exclusion {
    pub cond: u8,
    pub from: u8,
    pub to: u8,
}

/// A funnel's exclusions (a fixed array, so that a mode stays `Copy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exclusions {
    list: [Exclusion; MAX_EXCLUSIONS],
    len: u8,
}

impl Exclusions {
    /// Adds one; false when there are [`MAX_EXCLUSIONS`] already.
    pub fn push(&mut self, exclusion: Exclusion) -> bool {
        if self.len as usize == MAX_EXCLUSIONS {
            return false;
        }
        self.list[self.len as usize] = exclusion;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[Exclusion] {
        &self.list[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn of(&self, cond: u8) -> impl Iterator<Item = &Exclusion> {
        self.as_slice().iter().filter(move |e| e.cond == cond)
    }
}

/// The level reached (0..=steps) and the events of the chain that reached it, one per step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub level: u8,
    pub chain: Vec<Event>,
}

pub fn evaluate(events: &mut [Event], steps: u8, window: i64, mode: Mode) -> Outcome {
    let mut chain = Vec::new();
    let level = evaluate_into(
        events,
        steps,
        window,
        mode,
        &mut Scratch::default(),
        Some(&mut chain),
    );
    Outcome { level, chain }
}

/// Buffers [`evaluate_into`] reuses from one group to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per step: whether a chain reached it, and that chain's first and latest times.
    reached: Vec<bool>,
    first: Vec<i64>,
    last: Vec<i64>,
    /// When the chain is wanted, row `k` (`steps` wide) holds that chain's step events.
    chains: Vec<Event>,
}

/// The level reached; with `chain`, the events of the chain that reached it are appended to
/// it. `events` are reordered unless already in (ts, cond) order: events at equal (ts, cond)
/// reach the same level in any order, but a caller that needs to know which one a chain took
/// sorts them first (a later one at the same time and step is taken over an earlier one).
pub fn evaluate_into(
    events: &mut [Event],
    steps: u8,
    window: i64,
    mode: Mode,
    scratch: &mut Scratch,
    chain: Option<&mut Vec<Event>>,
) -> u8 {
    if events.is_empty() {
        return 0;
    }
    if !mode.strict_order && steps == 1 {
        if let Some(chain) = chain {
            let first = events.iter().min_by_key(|e| (e.ts, e.row));
            chain.push(*first.expect("not empty"));
        }
        return 1;
    }
    if mode.unordered {
        if !events.is_sorted_by_key(|e| (e.ts, e.cond)) {
            events.sort_unstable_by_key(|e| (e.ts, e.cond));
        }
        let outcome = scan_unordered(events, steps as usize, window);
        if let Some(chain) = chain {
            chain.extend(outcome.chain);
        }
        outcome.level
    } else if mode.strict_once {
        events.sort_unstable_by_key(|e| (e.ts, e.cond, e.row));
        let outcome = scan_strict_once(events, steps as usize, window, mode);
        if let Some(chain) = chain {
            chain.extend(outcome.chain);
        }
        outcome.level
    } else {
        // Equal (ts, cond) pairs are interchangeable here, so an unstable sort is exact. Stored
        // events mostly arrive in time order already.
        if !events.is_sorted_by_key(|e| (e.ts, e.cond)) {
            events.sort_unstable_by_key(|e| (e.ts, e.cond));
        }
        scan(events, steps as usize, window, mode, scratch, chain)
    }
}

fn within_window(ts: i64, first: i64, window: i64) -> bool {
    (ts as i128) <= first as i128 + window as i128
}

/// One chain per step: the newest chain that reached it.
fn scan(
    events: &[Event],
    steps: usize,
    window: i64,
    mode: Mode,
    scratch: &mut Scratch,
    chain: Option<&mut Vec<Event>>,
) -> u8 {
    let Scratch {
        reached,
        first,
        last,
        chains,
    } = scratch;
    reached.clear();
    reached.resize(steps, false);
    first.resize(steps, 0);
    last.resize(steps, 0);
    let want_chain = chain.is_some();
    let excluding = !mode.exclusions.is_empty();
    // Exclusions need each chain's step times.
    let keep_chains = want_chain || excluding;
    if keep_chains {
        chains.resize(steps * steps, Event::default());
    }
    // With exclusions a chain may break after reaching a step, so the best level (and the
    // newest chain at it) is kept apart from the live chains.
    let mut best = 0;
    let mut best_chain: Vec<Event> = Vec::new();
    let mut started = false;
    for event in events {
        if excluding && event.cond as usize > steps {
            for exclusion in mode.exclusions.of(event.cond) {
                let (from, to) = (exclusion.from as usize - 1, exclusion.to as usize - 1);
                for state in from..to {
                    if reached[state] && chains[state * steps + from].ts < event.ts {
                        reached[state] = false;
                    }
                }
            }
            continue;
        }
        if event.cond == 0 {
            // Only recorded in strict_order mode: an unrelated event.
            if started {
                break;
            }
            continue;
        }
        let step = event.cond as usize - 1;
        if step == 0 {
            reached[0] = true;
            first[0] = event.ts;
            last[0] = event.ts;
            if keep_chains {
                chains[0] = *event;
            }
            if excluding && best <= 1 {
                best = 1;
                best_chain.clear();
                best_chain.push(*event);
            }
            started = true;
        } else if mode.strict_deduplication && reached[step] {
            break;
        } else if mode.strict_order && started && !reached[step - 1] {
            if mode.allow_reentry {
                continue;
            }
            break;
        } else if reached[step - 1] {
            let matched = extends(
                event.ts,
                step,
                first[step - 1],
                last[step - 1],
                window,
                &mode,
            ) && (!mode.strict_increase || last[step - 1] < event.ts);
            if matched {
                reached[step] = true;
                first[step] = first[step - 1];
                last[step] = event.ts;
                if keep_chains {
                    let (before, after) = chains.split_at_mut(step * steps);
                    after[..step].copy_from_slice(&before[(step - 1) * steps..][..step]);
                    after[step] = *event;
                }
                if excluding && best <= step + 1 {
                    best = step + 1;
                    best_chain.clear();
                    best_chain.extend_from_slice(&chains[step * steps..][..=step]);
                }
                if step + 1 == steps {
                    break;
                }
            }
        }
    }
    if excluding {
        if let Some(chain) = chain {
            chain.extend_from_slice(&best_chain);
        }
        return best as u8;
    }
    let level = reached.iter().rposition(|&r| r).map_or(0, |k| k + 1);
    if let Some(chain) = chain
        && level > 0
    {
        chain.extend_from_slice(&chains[(level - 1) * steps..][..level]);
    }
    level as u8
}

/// `unordered`: from each event, the distinct steps met at most `window` after it (inclusive);
/// the level is the most of any start, the earliest such start wins, and its chain is the first
/// event of each of those steps, in time order.
fn scan_unordered(events: &[Event], steps: usize, window: i64) -> Outcome {
    let mut counts = vec![0u32; steps];
    let (mut distinct, mut end) = (0, 0);
    let mut best: Option<(usize, usize)> = None; // (distinct steps, start)
    for start in 0..events.len() {
        while end < events.len() && within_window(events[end].ts, events[start].ts, window) {
            let step = events[end].cond as usize - 1;
            if counts[step] == 0 {
                distinct += 1;
            }
            counts[step] += 1;
            end += 1;
        }
        if best.is_none_or(|(most, _)| distinct > most) {
            best = Some((distinct, start));
            if distinct == steps {
                break;
            }
        }
        let step = events[start].cond as usize - 1;
        counts[step] -= 1;
        if counts[step] == 0 {
            distinct -= 1;
        }
    }
    let Some((level, start)) = best else {
        return Outcome::default();
    };
    let mut seen = vec![false; steps];
    let chain = events[start..]
        .iter()
        .take_while(|e| within_window(e.ts, events[start].ts, window))
        .filter(|e| !std::mem::replace(&mut seen[e.cond as usize - 1], true))
        .copied()
        .collect();
    Outcome {
        level: level as u8,
        chain,
    }
}

/// One chain: its events, step by step.
struct Sequence {
    events: Vec<Event>,
}

/// `strict_once`: every chain is kept per step (one row may extend several), and a chain may
/// not use the same row twice. Chains that fell out of the window are dropped, keeping one.
fn scan_strict_once(events: &[Event], steps: usize, window: i64, mode: Mode) -> Outcome {
    let mut sequences: Vec<Vec<Sequence>> = (0..steps).map(|_| Vec::new()).collect();
    let mut started = false;
    let reached = |sequences: &[Vec<Sequence>]| -> Outcome {
        match sequences.iter().rposition(|s| !s.is_empty()) {
            Some(k) => Outcome {
                level: (k + 1) as u8,
                chain: sequences[k][0].events.clone(),
            },
            None => Outcome::default(),
        }
    };
    for event in events {
        if event.cond == 0 {
            if started {
                break;
            }
            continue;
        }
        let step = event.cond as usize - 1;
        if step == 0 {
            sequences[0].push(Sequence {
                events: vec![*event],
            });
            started = true;
        } else if mode.strict_deduplication && !sequences[step].is_empty() {
            return reached(&sequences);
        } else if mode.strict_order && started && sequences[step - 1].is_empty() {
            if mode.allow_reentry {
                continue;
            }
            return reached(&sequences);
        } else if !sequences[step - 1].is_empty() {
            let (before, after) = sequences.split_at_mut(step);
            let previous = &mut before[step - 1];
            let current = &mut after[0];
            let mut i = 0;
            while i < previous.len() {
                let candidate = &previous[i];
                let first = candidate.events[0].ts;
                let latest = candidate.events.last().expect("not empty").ts;
                let mut matched = extends(event.ts, step, first, latest, window, &mode);
                if !matched && previous.len() > 1 {
                    previous.remove(i);
                    continue;
                }
                matched = matched && !candidate.events.iter().any(|e| e.row == event.row);
                if matched && mode.strict_increase {
                    matched = candidate.events.last().expect("not empty").ts < event.ts;
                }
                if matched {
                    let mut events = candidate.events.clone();
                    events.push(*event);
                    current.push(Sequence { events });
                    if step + 1 == steps {
                        let completed = current.last().expect("just pushed").events.clone();
                        return Outcome {
                            level: steps as u8,
                            chain: completed,
                        };
                    }
                }
                i += 1;
            }
        }
    }
    reached(&sequences)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of (ts, matched conditions), in arrival order, as the accumulator records them.
    fn events(rows: &[(i64, &[u8])], strict_order: bool) -> Vec<Event> {
        let mut out = Vec::new();
        for (row, (ts, conds)) in rows.iter().enumerate() {
            let mut sorted = conds.to_vec();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            for cond in &sorted {
                out.push(Event {
                    ts: *ts,
                    cond: *cond,
                    row: row as u32,
                });
            }
            if strict_order && conds.is_empty() {
                out.push(Event {
                    ts: *ts,
                    cond: 0,
                    row: row as u32,
                });
            }
        }
        out
    }

    fn level(rows: &[(i64, &[u8])], steps: u8, window: i64, mode: Mode) -> u8 {
        evaluate(&mut events(rows, mode.strict_order), steps, window, mode).level
    }

    #[test]
    fn window_is_measured_from_the_first_step_inclusive() {
        let rows: &[(i64, &[u8])] = &[(1, &[1]), (5, &[2]), (11, &[3]), (12, &[3])];
        assert_eq!(level(rows, 3, 10, Mode::default()), 3);
        assert_eq!(level(rows, 3, 9, Mode::default()), 2);
        let outcome = evaluate(&mut events(rows, false), 3, 10, Mode::default());
        let times: Vec<i64> = outcome.chain.iter().map(|e| e.ts).collect();
        assert_eq!(times, [1, 5, 11]);
        let rows: Vec<u32> = outcome.chain.iter().map(|e| e.row).collect();
        assert_eq!(rows, [0, 1, 2]);
    }

    fn excluding(cond: u8, from: u8, to: u8) -> Mode {
        let mut mode = Mode::default();
        assert!(mode.exclusions.push(Exclusion { cond, from, to }));
        mode
    }

    #[test]
    fn an_exclusion_between_the_steps_breaks_the_chain_a_later_one_may_go_on() {
        // Steps: 1, 2, 3; condition 4 is the exclusion between steps 1 and 3.
        let mode = excluding(4, 1, 3);
        let broken: &[(i64, &[u8])] = &[(1, &[1]), (2, &[2]), (3, &[4]), (4, &[3])];
        assert_eq!(
            level(broken, 3, 10, mode),
            2,
            "the chain keeps the level it reached"
        );
        assert_eq!(level(broken, 3, 10, Mode::default()), 3);
        let restarted: &[(i64, &[u8])] = &[(1, &[1]), (2, &[4]), (3, &[1]), (4, &[2]), (5, &[3])];
        let outcome = evaluate(&mut events(restarted, false), 3, 10, mode);
        assert_eq!(outcome.level, 3);
        assert_eq!(
            outcome.chain.iter().map(|e| e.ts).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        // Outside the range (after step 3 is reached, or before step 1) nothing breaks.
        let outside: &[(i64, &[u8])] = &[(0, &[4]), (1, &[1]), (2, &[2]), (3, &[3]), (4, &[4])];
        assert_eq!(level(outside, 3, 10, mode), 3);
        // Between steps 2 and 3 only: an exclusion right after step 1 does not count.
        let later_range = excluding(4, 2, 3);
        let early: &[(i64, &[u8])] = &[(1, &[1]), (2, &[4]), (3, &[2]), (4, &[3])];
        assert_eq!(level(early, 3, 10, later_range), 3);
    }

    #[test]
    fn unordered_steps_count_in_any_order_within_the_window() {
        let mode = Mode {
            unordered: true,
            ..Mode::default()
        };
        // Step 3, then 1, then 2 within 10: all three; the window is from the first of them.
        let rows: &[(i64, &[u8])] = &[(0, &[2]), (20, &[3]), (25, &[1]), (30, &[2]), (45, &[1])];
        let outcome = evaluate(&mut events(rows, false), 3, 10, mode);
        assert_eq!(outcome.level, 3);
        assert_eq!(
            outcome
                .chain
                .iter()
                .map(|e| (e.ts, e.cond))
                .collect::<Vec<_>>(),
            [(20, 3), (25, 1), (30, 2)]
        );
        assert_eq!(level(rows, 3, 9, mode), 2);
        // Repeats of one step count once.
        let repeats: &[(i64, &[u8])] = &[(0, &[1]), (1, &[1]), (2, &[1])];
        assert_eq!(level(repeats, 2, 10, mode), 1);
        assert_eq!(level(&[], 2, 10, mode), 0);
    }

    #[test]
    fn per_step_windows_measure_from_the_step_before() {
        let mode = Mode {
            step_windows: StepWindows::new(&[10, 100]).unwrap(),
            ..Mode::default()
        };
        // 1 -> 2 within 10, 2 -> 3 within 100: reached, though 3 is 105 after 1.
        let rows: &[(i64, &[u8])] = &[(0, &[1]), (5, &[2]), (105, &[3])];
        assert_eq!(level(rows, 3, 0, mode), 3);
        assert_eq!(level(rows, 3, 100, Mode::default()), 2);
        let late: &[(i64, &[u8])] = &[(0, &[1]), (11, &[2]), (12, &[3])];
        assert_eq!(level(late, 3, 0, mode), 1);
        let strict_once = Mode {
            strict_once: true,
            ..mode
        };
        assert_eq!(level(rows, 3, 0, strict_once), 3);
        assert_eq!(level(late, 3, 0, strict_once), 1);
    }

    #[test]
    fn at_equal_times_an_exclusion_is_not_between() {
        let mode = excluding(3, 1, 2);
        // At the time of step 1: not after it. At the time of step 2: too late.
        let with_step_1: &[(i64, &[u8])] = &[(1, &[1]), (1, &[3]), (2, &[2])];
        assert_eq!(level(with_step_1, 2, 10, mode), 2);
        let with_step_2: &[(i64, &[u8])] = &[(1, &[1]), (2, &[3]), (2, &[2])];
        assert_eq!(level(with_step_2, 2, 10, mode), 2);
        let between: &[(i64, &[u8])] = &[(1, &[1]), (2, &[3]), (3, &[2])];
        assert_eq!(level(between, 2, 10, mode), 1);
    }

    #[test]
    fn a_later_start_can_reach_further() {
        let rows: &[(i64, &[u8])] = &[(0, &[1]), (100, &[1]), (105, &[2]), (108, &[3])];
        assert_eq!(level(rows, 3, 10, Mode::default()), 3);
    }

    #[test]
    fn strict_deduplication_stops_at_a_repeated_step() {
        let rows: &[(i64, &[u8])] = &[(1, &[1]), (2, &[2]), (3, &[2]), (4, &[3])];
        let mode = Mode {
            strict_deduplication: true,
            ..Mode::default()
        };
        assert_eq!(level(rows, 3, 10, mode), 2);
        assert_eq!(level(rows, 3, 10, Mode::default()), 3);
    }

    #[test]
    fn strict_order_stops_at_other_events() {
        let rows: &[(i64, &[u8])] = &[(1, &[1]), (2, &[2]), (3, &[]), (4, &[3])];
        let mode = Mode {
            strict_order: true,
            ..Mode::default()
        };
        assert_eq!(level(rows, 3, 10, mode), 2);
        // A -> B -> D -> C stops at D, unless re-entry skips the out-of-order step.
        let rows: &[(i64, &[u8])] = &[(1, &[1]), (2, &[2]), (3, &[4]), (4, &[3]), (5, &[4])];
        assert_eq!(level(rows, 4, 10, mode), 2);
        let reentry = Mode {
            strict_order: true,
            allow_reentry: true,
            ..Mode::default()
        };
        assert_eq!(level(rows, 4, 10, reentry), 4);
    }

    #[test]
    fn strict_increase_needs_later_timestamps() {
        let rows: &[(i64, &[u8])] = &[(1, &[1]), (1, &[2]), (2, &[3])];
        assert_eq!(level(rows, 3, 10, Mode::default()), 3);
        let mode = Mode {
            strict_increase: true,
            ..Mode::default()
        };
        assert_eq!(level(rows, 3, 10, mode), 1);
    }

    #[test]
    fn strict_once_counts_a_row_once() {
        // One row matching steps 1 and 2 can complete a 2-step funnel only without strict_once.
        let rows: &[(i64, &[u8])] = &[(1, &[1, 2])];
        assert_eq!(level(rows, 2, 10, Mode::default()), 2);
        let mode = Mode {
            strict_once: true,
            ..Mode::default()
        };
        assert_eq!(level(rows, 2, 10, mode), 1);
        let rows: &[(i64, &[u8])] = &[(1, &[1, 2]), (2, &[2])];
        assert_eq!(level(rows, 2, 10, mode), 2);
    }

    #[test]
    fn single_step_and_empty() {
        assert_eq!(level(&[(7, &[1])], 1, 1, Mode::default()), 1);
        assert_eq!(evaluate(&mut [], 3, 1, Mode::default()), Outcome::default());
        // Events that never start a chain reach nothing.
        assert_eq!(level(&[(1, &[2]), (2, &[3])], 3, 10, Mode::default()), 0);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let rows: &[(i64, &[u8])] = &[(i64::MAX - 1, &[1]), (i64::MAX, &[2])];
        assert_eq!(level(rows, 2, i64::MAX, Mode::default()), 2);
        let rows: &[(i64, &[u8])] = &[(i64::MIN, &[1]), (0, &[2])];
        assert_eq!(level(rows, 2, i64::MAX, Mode::default()), 1);
    }
}
