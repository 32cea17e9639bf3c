//! Persons as connected components of the identity rules' pairs, with the rules' guards.
//!
//! Union-find over the dense user keys, with union by size and path halving, so millions of
//! pairs resolve in seconds. Rules are applied in priority order and each rule's pairs in key
//! order, so a refresh over the same pairs always gives the same persons.
//!
//! - A person's key is the smallest user key among its identifiers: the identifier seen first.
//!   Keys are handed out in increasing order, so an identifier that joins a person never takes
//!   its key, and when two persons merge the older one survives.
//! - `LIMIT m` of a rule: a person may hold at most `m` of the identifiers that rule names in
//!   its second column, whichever rule links them. A merge that would break any limit is
//!   refused and recorded; earlier (higher-priority) rules have already merged by then, so
//!   they win.
//! - A merge is recorded when it joins two persons of the previous resolution (identifiers
//!   new since then were nobody's person yet, so their joining is no merge).

/// One rule's pairs, in the order rules are applied.
#[derive(Debug, Default)]
pub struct RulePairs {
    /// `Some(m)`: at most `m` of this rule's second identifiers per person.
    pub limit: Option<u32>,
    pub pairs: Vec<(u64, u64)>,
}

/// Two persons of the previous resolution that became one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The surviving person, as resolved now.
    pub person_key: u64,
    /// The person that joined it.
    pub merged_person_key: u64,
    /// Index (in the order given) of the rule whose pair merged them.
    pub rule: usize,
}

/// A pair whose merge would have broken a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule whose pair was refused.
    pub rule: usize,
    /// The rule whose limit it would have broken.
    pub limited_by: usize,
    pub left: u64,
    pub right: u64,
}

#[derive(Debug, Default)]
pub struct Resolution {
    /// `(user_key, person_key)` for every identifier whose person key is not its own key.
    pub moved: Vec<(u64, u64)>,
    pub persons: u64,
    pub merges: Vec<Merge>,
    pub refusals: Vec<Refusal>,
}

/// What the previous resolution said.
pub trait Previous {
    /// The person of `key` then; only asked for keys below [`Previous::watermark`].
    fn person_of(&self, key: u64) -> u64;
    /// The number of keys that existed then (keys are dense): `0` before any resolution.
    fn watermark(&self) -> u64;
}

const NO_PERSON: u64 = u64::MAX;

/// Resolves `keys` identifiers (keys `0..keys`) linked by `rules`' pairs. Every key of a pair
/// must be below `keys`.
pub fn resolve(keys: u64, rules: &mut [RulePairs], previous: &dyn Previous) -> Resolution {
    let n = usize::try_from(keys).expect("keys fit in memory");
    let mut sets = Sets::new(n);
    let limited: Vec<(usize, u32)> = rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| rule.limit.map(|limit| (index, limit)))
        .collect();
    // The identifiers each limited rule names count towards its limit in whichever person
    // they end up, so they are counted before any rule merges.
    let mut counts: Vec<Vec<u32>> = limited
        .iter()
        .map(|&(index, _)| {
            let mut count = vec![0u32; n];
            for &(_, right) in &rules[index].pairs {
                count[right as usize] = 1;
            }
            count
        })
        .collect();
    let watermark = previous.watermark().min(keys);
    let mut was: Vec<u64> = (0..keys)
        .map(|key| {
            if key < watermark {
                previous.person_of(key)
            } else {
                NO_PERSON
            }
        })
        .collect();
    let mut merges = Vec::new();
    let mut refusals = Vec::new();
    // (a key of the merged component, merged person, rule): the survivor is known at the end.
    let mut merged_at: Vec<(u64, u64, usize)> = Vec::new();
    for (rule_index, rule) in rules.iter_mut().enumerate() {
        rule.pairs.sort_unstable();
        rule.pairs.dedup();
        'pairs: for &(left, right) in &rule.pairs {
            let (a, b) = (sets.find(left as usize), sets.find(right as usize));
            if a == b {
                continue;
            }
            for (slot, &(limited_rule, limit)) in limited.iter().enumerate() {
                if counts[slot][a] + counts[slot][b] > limit {
                    refusals.push(Refusal {
                        rule: rule_index,
                        limited_by: limited_rule,
                        left,
                        right,
                    });
                    continue 'pairs;
                }
            }
            let root = sets.union(a, b);
            let other = if root == a { b } else { a };
            for count in &mut counts {
                count[root] += count[other];
            }
            let (x, y) = (was[root], was[other]);
            if x != NO_PERSON && y != NO_PERSON && x != y {
                merged_at.push((left, x.max(y), rule_index));
            }
            was[root] = match (x, y) {
                (NO_PERSON, y) => y,
                (x, NO_PERSON) => x,
                (x, y) => x.min(y),
            };
        }
    }
    let mut person_of_root = vec![NO_PERSON; n];
    let mut moved = Vec::new();
    let mut persons = 0;
    for key in 0..n {
        let root = sets.find(key);
        if person_of_root[root] == NO_PERSON {
            // Keys ascend, so the first key met of a component is its smallest.
            person_of_root[root] = key as u64;
            persons += 1;
        } else {
            moved.push((key as u64, person_of_root[root]));
        }
    }
    for (member, merged, rule) in merged_at {
        merges.push(Merge {
            person_key: person_of_root[sets.find(member as usize)],
            merged_person_key: merged,
            rule,
        });
    }
    Resolution {
        moved,
        persons,
        merges,
        refusals,
    }
}

struct Sets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl Sets {
    fn new(n: usize) -> Self {
        assert!(n <= u32::MAX as usize, "more identifiers than a u32 counts");
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let grandparent = self.parent[self.parent[x] as usize];
            self.parent[x] = grandparent;
            x = grandparent as usize;
        }
        x
    }

    /// Joins two roots; returns the root of the union.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Previous for Nothing {
        fn person_of(&self, key: u64) -> u64 {
            key
        }
        fn watermark(&self) -> u64 {
            0
        }
    }

    struct Was(Vec<u64>);
    impl Previous for Was {
        fn person_of(&self, key: u64) -> u64 {
            self.0[key as usize]
        }
        fn watermark(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn persons(keys: u64, resolution: &Resolution) -> Vec<u64> {
        let mut person: Vec<u64> = (0..keys).collect();
        for &(key, p) in &resolution.moved {
            person[key as usize] = p;
        }
        person
    }

    fn rule(limit: Option<u32>, pairs: &[(u64, u64)]) -> RulePairs {
        RulePairs {
            limit,
            pairs: pairs.to_vec(),
        }
    }

    #[test]
    fn components_take_their_smallest_key_and_cycles_are_harmless() {
        let mut rules = [
            rule(None, &[(4, 2), (2, 7), (7, 4), (5, 5)]),
            rule(None, &[(6, 1), (1, 6)]),
        ];
        let resolution = resolve(8, &mut rules, &Nothing);
        assert_eq!(persons(8, &resolution), vec![0, 1, 2, 3, 2, 5, 1, 2]);
        assert_eq!(resolution.persons, 5);
        assert!(resolution.merges.is_empty(), "nothing existed before");
        assert!(resolution.refusals.is_empty());
    }

    #[test]
    fn a_limit_refuses_the_merge_that_breaks_it_and_priority_decides_who_wins() {
        // Rule 0 (first in priority) links a device (0) to user 1. Rule 1 says a person holds
        // at most one login id (its second column): devices 0 and 3 both logged in as 1 and 2.
        let mut rules = [
            rule(None, &[(0, 1)]),
            rule(Some(1), &[(0, 2), (3, 1), (3, 2)]),
        ];
        let resolution = resolve(4, &mut rules, &Nothing);
        // (0,2) would put users 1 and 2 in one person: refused. (3,1) joins; (3,2) refused.
        assert_eq!(persons(4, &resolution), vec![0, 0, 2, 0]);
        assert_eq!(
            resolution.refusals,
            vec![
                Refusal {
                    rule: 1,
                    limited_by: 1,
                    left: 0,
                    right: 2
                },
                Refusal {
                    rule: 1,
                    limited_by: 1,
                    left: 3,
                    right: 2
                },
            ]
        );
    }

    #[test]
    fn merges_of_earlier_persons_are_recorded_with_the_older_survivor() {
        // Before: {0, 2} was person 0, {1, 3} person 1, 4 alone; 5 is new.
        let previous = Was(vec![0, 1, 0, 1, 4]);
        let mut rules = [rule(None, &[(0, 2), (1, 3), (3, 2), (5, 4), (4, 0)])];
        let resolution = resolve(6, &mut rules, &previous);
        assert_eq!(persons(6, &resolution), vec![0; 6]);
        let mut merged: Vec<(u64, u64)> = resolution
            .merges
            .iter()
            .map(|m| (m.person_key, m.merged_person_key))
            .collect();
        merged.sort_unstable();
        assert_eq!(merged, vec![(0, 1), (0, 4)]);
    }
}
