//! The catalog of Cohort's functions: one entry per function with its signature, result type,
//! description and an example. Every function's `documentation()` comes from here, so
//! `SHOW FUNCTIONS` and `information_schema.routines` describe it; the README's function
//! tables are these entries rendered by [`markdown_table`] (a test checks they are equal), so
//! the documentation a client sees and the README cannot drift apart. The full semantics sit
//! beside each implementation.

use std::collections::HashMap;
use std::sync::OnceLock;

use datafusion::logical_expr::{DocSection, Documentation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Behavioural,
    Bitmap,
}

impl Section {
    fn doc_section(self) -> DocSection {
        let (label, description) = match self {
            Behavioural => (
                "Cohort behavioural functions",
                "Funnels, retention, sequences, paths and lifecycle over each group's events",
            ),
            Bitmap => (
                "Cohort bitmap functions",
                "Roaring bitmaps of user ids, with StarRocks' names and NULL rules",
            ),
        };
        DocSection {
            include: true,
            label,
            description: Some(description),
        }
    }
}

#[derive(Debug)]
pub struct Entry {
    pub name: &'static str,
    pub section: Section,
    pub syntax: &'static str,
    pub returns: &'static str,
    pub description: &'static str,
    pub example: &'static str,
}

const fn entry(
    name: &'static str,
    section: Section,
    syntax: &'static str,
    returns: &'static str,
    description: &'static str,
    example: &'static str,
) -> Entry {
    Entry {
        name,
        section,
        syntax,
        returns,
        description,
        example,
    }
}

use Section::{Behavioural, Bitmap};

/// Every Cohort function, in the README's order.
pub const ENTRIES: &[Entry] = &[
    entry(
        "window_funnel",
        Behavioural,
        "window_funnel(window, [mode,] ts, cond1, ..., condN)",
        "UInt8",
        "level reached (0..N) through N ordered steps, each within `window` of step 1",
        "SELECT user_id, window_funnel(INTERVAL '1 hour', ts, event = 'view', event = 'buy') FROM events GROUP BY user_id",
    ),
    entry(
        "window_funnel_steps",
        Behavioural,
        "window_funnel_steps(window, [mode,] ts, cond1, ..., condN)",
        "List<type of ts>",
        "the step timestamps of the chain that reached that level",
        "SELECT user_id, window_funnel_steps(INTERVAL '1 hour', ts, event = 'view', event = 'buy') FROM events GROUP BY user_id",
    ),
    entry(
        "window_funnel_breakdown",
        Behavioural,
        "window_funnel_breakdown(window, [mode,] attribution, ts, property, cond1, ..., condN)",
        "Struct<level UInt8, value Utf8>",
        "the level, and `property` of the chain's step-1 event (`'first_touch'`), last step reached (`'last_touch'`) or step k (`'step(k)'`); one value per user",
        "SELECT user_id, window_funnel_breakdown(INTERVAL '1 hour', 'first_touch', ts, campaign, event = 'view', event = 'buy') FROM events GROUP BY user_id",
    ),
    entry(
        "retention",
        Behavioural,
        "retention(cond1, ..., condN)",
        "List<UInt8>",
        "`[any cond1, any cond1 and any cond2, ...]` (2..32 conditions)",
        "SELECT user_id, retention(event = 'signup', event = 'login') FROM events GROUP BY user_id",
    ),
    entry(
        "retention_periods",
        Behavioural,
        "retention_periods(period, periods, [mode,] ts, start_cond, return_cond)",
        "List<UInt8>",
        "in cohort, then returned in period k after the first (`first_time`) or any (`recurring`) start",
        "SELECT user_id, retention_periods(INTERVAL '1 week', 8, ts, event = 'signup', event = 'login') FROM events GROUP BY user_id",
    ),
    entry(
        "sequence_match",
        Behavioural,
        "sequence_match(pattern, ts, cond1, ...)",
        "Boolean",
        "the events contain the pattern, e.g. `'(?1).*(?2)(?t<=3600)(?3)'`",
        "SELECT user_id, sequence_match('(?1).*(?2)', ts, event = 'add_to_cart', event = 'purchase') FROM events GROUP BY user_id",
    ),
    entry(
        "sequence_count",
        Behavioural,
        "sequence_count(pattern, ts, cond1, ...)",
        "UInt64",
        "non-overlapping occurrences of the pattern",
        "SELECT user_id, sequence_count('(?1).*(?2)', ts, event = 'add_to_cart', event = 'purchase') FROM events GROUP BY user_id",
    ),
    entry(
        "sequence_next_node",
        Behavioural,
        "sequence_next_node(direction, base, ts, event_column, base_cond, event1, ...)",
        "Utf8",
        "the event right after (`forward`) or before (`backward`) the chain event1, event2, ... from the base (`head`, `tail`, `first_match`, `last_match` of event1); events at equal times in value order",
        "SELECT user_id, sequence_next_node('forward', 'first_match', ts, event, true, event = 'add_to_cart') FROM events GROUP BY user_id",
    ),
    entry(
        "event_path",
        Behavioural,
        "event_path(ts, event, max_steps [, start_cond] [, 'dedupe'])",
        "List<Utf8>",
        "the events in time order (equal times in value order) from the first meeting `start_cond`, at most `max_steps`; `'dedupe'` counts consecutive repeats once",
        "SELECT user_id, event_path(ts, event, 5, event = 'signup', 'dedupe') FROM events GROUP BY user_id",
    ),
    entry(
        "path_edges",
        Behavioural,
        "path_edges((query))",
        "table (step, source, target, users)",
        "table function: the Sankey edges of a column of paths, `users` per edge from item `step` to the next",
        "SELECT * FROM path_edges((SELECT event_path(ts, event, 4) FROM events GROUP BY user_id)) LIMIT 10",
    ),
    entry(
        "sum_for_each",
        Behavioural,
        "sum_for_each(list)",
        "List",
        "element-wise sums, e.g. to total retention arrays",
        "SELECT sum_for_each(r) FROM (SELECT retention(event = 'signup', event = 'login') AS r FROM events GROUP BY user_id)",
    ),
    entry(
        "active_periods",
        Behavioural,
        "active_periods(period, ts, cond [, origin])",
        "Int64",
        "stickiness: distinct periods (bins of `period` from `origin`, default the Unix epoch, as `date_bin`) with a row meeting `cond`",
        "SELECT user_id, active_periods(INTERVAL '1 day', ts, event = 'purchase') FROM events GROUP BY user_id",
    ),
    entry(
        "lifecycle",
        Behavioural,
        "lifecycle(period, periods, ts, active_cond, start)",
        "List<Struct<period, status>>",
        "growth accounting: per reported period from `start`, the user's status `new`, `returning`, `resurrecting` or `dormant` (PostHog's definitions); rows before `start` are history",
        "SELECT user_id, lifecycle(INTERVAL '7 days', 8, ts, true, TIMESTAMP '2026-09-07 00:00:00') FROM events GROUP BY user_id",
    ),
    entry(
        "utc_date",
        Behavioural,
        "utc_date(ts)",
        "Date32",
        "the UTC calendar date of a timestamp; `CAST(ts AS DATE)` of a UTC or zone-less timestamp runs through it",
        "SELECT utc_date(ts), count(*) FROM events GROUP BY 1",
    ),
    entry(
        "to_bitmap",
        Bitmap,
        "to_bitmap(id)",
        "Binary",
        "bitmap of one id (NULL -> NULL)",
        "SELECT to_bitmap(42)",
    ),
    entry(
        "bitmap_and",
        Bitmap,
        "bitmap_and(b1, b2, ...)",
        "Binary",
        "intersection (any NULL -> NULL)",
        "SELECT bitmap_cardinality(bitmap_and(to_bitmap(1), to_bitmap(1)))",
    ),
    entry(
        "bitmap_or",
        Bitmap,
        "bitmap_or(b1, b2, ...)",
        "Binary",
        "union (any NULL -> NULL)",
        "SELECT bitmap_to_array(bitmap_or(to_bitmap(1), to_bitmap(2)))",
    ),
    entry(
        "bitmap_xor",
        Bitmap,
        "bitmap_xor(b1, b2, ...)",
        "Binary",
        "symmetric difference (any NULL -> NULL)",
        "SELECT bitmap_to_array(bitmap_xor(bitmap_or(to_bitmap(1), to_bitmap(2)), to_bitmap(2)))",
    ),
    entry(
        "bitmap_andnot",
        Bitmap,
        "bitmap_andnot(b1, b2, ...)",
        "Binary",
        "`b1` without the ids of the others",
        "SELECT bitmap_to_array(bitmap_andnot(bitmap_or(to_bitmap(1), to_bitmap(2)), to_bitmap(2)))",
    ),
    entry(
        "bitmap_cardinality",
        Bitmap,
        "bitmap_cardinality(b)",
        "Int64",
        "number of ids (NULL -> 0, as StarRocks' `bitmap_count`)",
        "SELECT bitmap_cardinality(bitmap_agg(user_id)) FROM events",
    ),
    entry(
        "bitmap_contains",
        Bitmap,
        "bitmap_contains(b, id)",
        "Boolean",
        "membership (NULL in -> NULL)",
        "SELECT bitmap_contains(to_bitmap(1), 1)",
    ),
    entry(
        "bitmap_to_array",
        Bitmap,
        "bitmap_to_array(b)",
        "List<UInt64>",
        "the ids, ascending",
        "SELECT bitmap_to_array(bitmap_or(to_bitmap(2), to_bitmap(1)))",
    ),
    entry(
        "bitmap_agg",
        Bitmap,
        "bitmap_agg(id)",
        "Binary",
        "aggregate: the group's non-NULL ids",
        "SELECT event, bitmap_agg(user_id) FROM events GROUP BY event",
    ),
    entry(
        "bitmap_union",
        Bitmap,
        "bitmap_union(b)",
        "Binary",
        "aggregate: the union of a bitmap column",
        "SELECT bitmap_cardinality(bitmap_union(b)) FROM (SELECT bitmap_agg(user_id) AS b FROM events GROUP BY event)",
    ),
    entry(
        "bitmap_intersect",
        Bitmap,
        "bitmap_intersect(b)",
        "Binary",
        "aggregate: the intersection of a bitmap column (of no bitmaps: NULL)",
        "SELECT bitmap_cardinality(bitmap_intersect(b)) FROM (SELECT bitmap_agg(user_id) AS b FROM events GROUP BY event)",
    ),
    entry(
        "intersect_count",
        Bitmap,
        "intersect_count(b, column, v1, v2, ...)",
        "Int64",
        "aggregate: ids present for every listed value of `column`",
        "SELECT intersect_count(b, event, 'signup', 'purchase') FROM (SELECT event, bitmap_agg(user_id) AS b FROM events GROUP BY event)",
    ),
    entry(
        "split_bucket",
        Bitmap,
        "split_bucket(user_key, seed)",
        "Int32",
        "the key's bucket 0..9999 by a salted hash of it: stable, independent between seeds",
        "SELECT split_bucket(user_key, 'spring_sale') < 1000 AS in_first_tenth, count(*) FROM profiles GROUP BY 1",
    ),
    entry(
        "split_group",
        Bitmap,
        "split_group(user_key, seed, 'name weight, ...')",
        "Utf8",
        "the key's group when buckets are split by percentage weights summing to 100 (`SPLIT` segments use it)",
        "SELECT split_group(user_key, 'spring_sale', 'a 50, b 50') AS arm, count(*) FROM profiles GROUP BY arm",
    ),
];

/// The catalog's documentation of the function `name`.
pub fn documentation(name: &str) -> Option<&'static Documentation> {
    static DOCUMENTATION: OnceLock<HashMap<&'static str, Documentation>> = OnceLock::new();
    DOCUMENTATION
        .get_or_init(|| {
            ENTRIES
                .iter()
                .map(|entry| {
                    let documentation = Documentation::builder(
                        entry.section.doc_section(),
                        description(entry),
                        entry.syntax,
                    )
                    .with_sql_example(format!("```sql\n{}\n```", entry.example))
                    .build();
                    (entry.name, documentation)
                })
                .collect()
        })
        .get(name)
}

/// The description clients are shown: the entry's, as a sentence, with what it returns.
pub fn description(entry: &Entry) -> String {
    format!(
        "{}. Returns {}.",
        capitalised(entry.description),
        entry.returns
    )
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The README's table of `section`.
pub fn markdown_table(section: Section) -> String {
    let mut table = String::from("| function | returns | what |\n|---|---|---|\n");
    for entry in ENTRIES.iter().filter(|e| e.section == section) {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            entry.syntax, entry.returns, entry.description
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every registered function has an entry, and every entry a function.
    #[test]
    fn the_catalog_covers_every_function() {
        let registered: HashSet<String> = crate::scalar_functions()
            .iter()
            .map(|f| f.name().to_string())
            .chain(
                crate::aggregate_functions()
                    .iter()
                    .map(|f| f.name().to_string()),
            )
            .chain(crate::table_functions().iter().map(|f| f.0.to_string()))
            .collect();
        let documented: HashSet<String> = ENTRIES.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(registered, documented);
        for function in crate::scalar_functions() {
            assert!(function.documentation().is_some(), "{}", function.name());
        }
        for function in crate::aggregate_functions() {
            assert!(function.documentation().is_some(), "{}", function.name());
        }
    }

    /// The README's function tables are the catalog's: change one, change the other.
    #[test]
    fn the_readme_tables_are_the_catalog() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for (heading, section) in [
            ("### Behavioural functions", Behavioural),
            ("### Bitmap functions", Bitmap),
        ] {
            let after = &readme[readme.find(heading).expect(heading)..];
            let start = after.find("| function |").expect("a function table");
            let table: String = after[start..]
                .lines()
                .take_while(|line| line.starts_with('|'))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_eq!(
                table,
                markdown_table(section),
                "README.md under {heading} differs from sql-extensions/src/catalog.rs"
            );
        }
    }
}
