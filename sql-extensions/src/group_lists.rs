//! Per-group lists of small items kept in one shared arena.
//!
//! Event-list aggregates (funnels, sequences) collect a few items for each of hundreds of
//! thousands of groups. A `Vec` per group means an allocation and several reallocations per
//! group and scattered memory; here every item is appended to one vector and linked to the
//! previous item of its group, so adding an item never allocates beyond amortised growth of the
//! arena. Input ordered by group (the usual `user_id, ts` layout) also keeps a group's items
//! next to each other.

use datafusion::common::exec_err;
use datafusion::error::Result;
use datafusion::logical_expr::EmitTo;

/// Marks the end of a list / an empty list.
const END: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct List {
    first: u32,
    last: u32,
    len: u32,
}

const EMPTY: List = List {
    first: END,
    last: END,
    len: 0,
};

#[derive(Debug)]
pub struct GroupLists<T> {
    items: Vec<T>,
    /// `next[i]`: the item after `items[i]` in its group's list, or `END`.
    next: Vec<u32>,
    lists: Vec<List>,
}

impl<T> Default for GroupLists<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            next: Vec::new(),
            lists: Vec::new(),
        }
    }
}

impl<T: Copy> GroupLists<T> {
    /// Number of groups (lists), empty or not.
    pub fn groups(&self) -> usize {
        self.lists.len()
    }

    /// Makes room for `groups` groups; new groups start empty.
    pub fn resize(&mut self, groups: usize) {
        self.lists.resize(groups, EMPTY);
    }

    /// Appends `item` to the list of `group` (which must exist).
    pub fn push(&mut self, group: usize, item: T) -> Result<()> {
        let index = self.items.len();
        if index >= END as usize {
            return exec_err!(
                "more than {} list items in one aggregation partition; use more partitions",
                END - 1
            );
        }
        let index = index as u32;
        self.items.push(item);
        self.next.push(END);
        let list = &mut self.lists[group];
        if list.len == 0 {
            list.first = index;
        } else {
            self.next[list.last as usize] = index;
        }
        list.last = index;
        list.len += 1;
        Ok(())
    }

    /// Number of items of `group`.
    pub fn len(&self, group: usize) -> usize {
        self.lists[group].len as usize
    }

    /// The items of `group` in the order they were pushed.
    pub fn iter(&self, group: usize) -> impl Iterator<Item = T> + Clone + '_ {
        let mut at = self.lists[group].first;
        std::iter::from_fn(move || {
            (at != END).then(|| {
                let item = self.items[at as usize];
                at = self.next[at as usize];
                item
            })
        })
    }

    /// Removes the groups `emit_to` names and returns them as their own lists, numbered from 0;
    /// the remaining groups are renumbered from 0 as well.
    pub fn take(&mut self, emit_to: EmitTo) -> Result<Self> {
        match emit_to {
            EmitTo::All => Ok(std::mem::take(self)),
            EmitTo::First(n) => {
                // Only the groups still open stay, so rebuilding is bounded by what is kept
                // plus what is emitted, as each emission's work is.
                let mut taken = Self::default();
                let mut kept = Self::default();
                taken.resize(n.min(self.groups()));
                kept.resize(self.groups().saturating_sub(n));
                for group in 0..self.groups() {
                    let (target, index) = if group < n {
                        (&mut taken, group)
                    } else {
                        (&mut kept, group - n)
                    };
                    for item in self.iter(group) {
                        target.push(index, item)?;
                    }
                }
                *self = kept;
                Ok(taken)
            }
        }
    }

    /// Heap bytes held.
    pub fn size(&self) -> usize {
        self.items.capacity() * size_of::<T>()
            + self.next.capacity() * size_of::<u32>()
            + self.lists.capacity() * size_of::<List>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(lists: &GroupLists<u32>) -> Vec<Vec<u32>> {
        (0..lists.groups())
            .map(|g| lists.iter(g).collect())
            .collect()
    }

    #[test]
    fn interleaved_pushes_keep_each_groups_order() {
        let mut lists = GroupLists::default();
        lists.resize(3);
        for (group, item) in [(0, 1), (2, 2), (0, 3), (0, 4), (2, 5)] {
            lists.push(group, item).unwrap();
        }
        assert_eq!(contents(&lists), vec![vec![1, 3, 4], vec![], vec![2, 5]]);
        assert_eq!(lists.len(0), 3);
        assert_eq!(lists.len(1), 0);
    }

    #[test]
    fn take_first_renumbers_both_parts() {
        let mut lists = GroupLists::default();
        lists.resize(4);
        for (group, item) in [(3, 1), (0, 2), (1, 3), (3, 4), (2, 5)] {
            lists.push(group, item).unwrap();
        }
        let taken = lists.take(EmitTo::First(2)).unwrap();
        assert_eq!(contents(&taken), vec![vec![2], vec![3]]);
        assert_eq!(contents(&lists), vec![vec![5], vec![1, 4]]);
        lists.resize(3);
        lists.push(2, 9).unwrap();
        let all = lists.take(EmitTo::All).unwrap();
        assert_eq!(contents(&all), vec![vec![5], vec![1, 4], vec![9]]);
        assert_eq!(lists.groups(), 0);
    }
}
