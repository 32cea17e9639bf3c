//! A trait's values sorted, so an audience term such as `ltv:[100,500)` is two binary searches
//! and a union of bitmaps, not a scan. Built once per version of the values table (see
//! [`super::TraitCache`]).
//!
//! The keys in value order are also cut into blocks of [`BLOCK`] positions with a bitmap each
//! (a range encoding): a range takes the bitmaps of the blocks it covers whole and sorts only the
//! keys of the two blocks at its edges, so selecting a third of a million users costs a union of
//! about a hundred bitmaps instead of inserting a third of a million keys in random order.

use std::ops::Bound;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use cohort_sql_extensions::bitmap::RoaringTreemap;
use cohort_sql_extensions::bitmap::expression::LiteralRange;
use roaring::MultiOps;

use super::TraitType;
use crate::error::{EngineError, Result};

/// Values ascending with the user key of each.
#[derive(Debug)]
enum Sorted {
    /// BIGINT, TIMESTAMP (microseconds) and BOOLEAN (0 and 1).
    Integer(Vec<i64>, Vec<u64>),
    Double(Vec<f64>, Vec<u64>),
    Text(Vec<String>, Vec<u64>),
}

/// Positions (in value order) per block bitmap.
const BLOCK: usize = 4096;

#[derive(Debug)]
pub struct TraitIndex {
    pub name: String,
    pub value_type: TraitType,
    sorted: Sorted,
    /// The keys of positions `i * BLOCK .. (i + 1) * BLOCK`.
    blocks: Vec<RoaringTreemap>,
}

fn sort_pairs<T>(
    mut pairs: Vec<(T, u64)>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> (Vec<T>, Vec<u64>) {
    pairs.sort_unstable_by(|a, b| cmp(&a.0, &b.0));
    pairs.into_iter().unzip()
}

impl TraitIndex {
    /// From the stored `(user_key, value)` columns; NULL (and NaN) values are no value.
    pub fn build(
        name: &str,
        value_type: TraitType,
        keys: &[ArrayRef],
        values: &[ArrayRef],
    ) -> Result<Self> {
        let rows = keys.iter().zip(values);
        let sorted = match value_type {
            TraitType::Bigint | TraitType::Timestamp | TraitType::Boolean => {
                let mut pairs = Vec::new();
                for (keys, values) in rows {
                    let keys = keys.as_primitive::<Int64Type>();
                    for row in 0..keys.len() {
                        if values.is_null(row) {
                            continue;
                        }
                        let value = match value_type {
                            TraitType::Bigint => values.as_primitive::<Int64Type>().value(row),
                            TraitType::Timestamp => {
                                values.as_primitive::<TimestampMicrosecondType>().value(row)
                            }
                            _ => i64::from(values.as_boolean().value(row)),
                        };
                        pairs.push((value, keys.value(row) as u64));
                    }
                }
                let (v, k) = sort_pairs(pairs, Ord::cmp);
                Sorted::Integer(v, k)
            }
            TraitType::Double => {
                let mut pairs = Vec::new();
                for (keys, values) in rows {
                    let (keys, values) = (
                        keys.as_primitive::<Int64Type>(),
                        values.as_primitive::<Float64Type>(),
                    );
                    for row in 0..keys.len() {
                        if values.is_valid(row) && !values.value(row).is_nan() {
                            pairs.push((values.value(row), keys.value(row) as u64));
                        }
                    }
                }
                let (v, k) = sort_pairs(pairs, f64::total_cmp);
                Sorted::Double(v, k)
            }
            TraitType::Text => {
                let mut pairs = Vec::new();
                for (keys, values) in rows {
                    let (keys, values) =
                        (keys.as_primitive::<Int64Type>(), values.as_string::<i32>());
                    for row in 0..keys.len() {
                        if values.is_valid(row) {
                            pairs.push((values.value(row).to_string(), keys.value(row) as u64));
                        }
                    }
                }
                let (v, k) = sort_pairs(pairs, Ord::cmp);
                Sorted::Text(v, k)
            }
        };
        let keys = match &sorted {
            Sorted::Integer(_, k) | Sorted::Double(_, k) | Sorted::Text(_, k) => k,
        };
        let blocks = keys.chunks(BLOCK).map(sorted_bitmap).collect();
        Ok(Self {
            name: name.to_string(),
            value_type,
            sorted,
            blocks,
        })
    }

    fn keys(&self) -> &[u64] {
        match &self.sorted {
            Sorted::Integer(_, k) | Sorted::Double(_, k) | Sorted::Text(_, k) => k,
        }
    }

    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// The keys at positions `start..end`: whole blocks by their bitmaps, the edges sorted.
    fn keys_between(&self, start: usize, end: usize) -> RoaringTreemap {
        let (first_whole, end_whole) = (start.div_ceil(BLOCK), end / BLOCK);
        if first_whole >= end_whole {
            return sorted_bitmap(&self.keys()[start..end]);
        }
        let mut users = self.blocks[first_whole..end_whole].iter().union();
        users |= sorted_bitmap(&self.keys()[start..first_whole * BLOCK]);
        users |= sorted_bitmap(&self.keys()[end_whole * BLOCK..end]);
        users
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The users a bare `name` selects: those whose BOOLEAN trait is true, or who have any
    /// value of another type.
    pub fn named(&self) -> Result<RoaringTreemap> {
        if self.value_type == TraitType::Boolean {
            return self.select(&[(
                Bound::Included("true".into()),
                Bound::Included("true".into()),
            )]);
        }
        self.select(&[(Bound::Unbounded, Bound::Unbounded)])
    }

    /// The users whose value falls in any of `ranges` (literals typed as the trait).
    pub fn select(&self, ranges: &[LiteralRange]) -> Result<RoaringTreemap> {
        let mut users = RoaringTreemap::new();
        for (low, high) in ranges {
            let (start, end) = match &self.sorted {
                Sorted::Integer(values, _) => {
                    let low = self.integer_bound(low, true)?;
                    let high = self.integer_bound(high, false)?;
                    positions(values, low.as_ref(), high.as_ref())
                }
                Sorted::Double(values, _) => {
                    let low = self.map_bound(low, |t| self.double(t))?;
                    let high = self.map_bound(high, |t| self.double(t))?;
                    positions(values, low.as_ref(), high.as_ref())
                }
                Sorted::Text(values, _) => positions(values, low.as_ref(), high.as_ref()),
            };
            if start < end {
                users |= self.keys_between(start, end);
            }
        }
        Ok(users)
    }

    fn map_bound<T>(
        &self,
        bound: &Bound<String>,
        convert: impl Fn(&str) -> Result<T>,
    ) -> Result<Bound<T>> {
        Ok(match bound {
            Bound::Included(text) => Bound::Included(convert(text)?),
            Bound::Excluded(text) => Bound::Excluded(convert(text)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    }

    fn mismatch(&self, literal: &str, expected: &str) -> EngineError {
        EngineError::InvalidStatement(format!(
            "trait '{}' is {}: '{literal}' is not {expected}",
            self.name,
            self.value_type.name()
        ))
    }

    fn double(&self, text: &str) -> Result<f64> {
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(self.mismatch(text, "a number")),
        }
    }

    /// A bound on an integer-coded trait. A fractional bound on a BIGINT is moved to the
    /// integers it admits: `>= 2.5` is `>= 3`, `< 2.5` is `<= 2`.
    fn integer_bound(&self, bound: &Bound<String>, low: bool) -> Result<Bound<i64>> {
        let text = match bound {
            Bound::Unbounded => return Ok(Bound::Unbounded),
            Bound::Included(text) | Bound::Excluded(text) => text,
        };
        let included = matches!(bound, Bound::Included(_));
        let exact = |value: i64| {
            if included {
                Bound::Included(value)
            } else {
                Bound::Excluded(value)
            }
        };
        match self.value_type {
            TraitType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(exact(1)),
                "false" => Ok(exact(0)),
                _ => Err(self.mismatch(text, "true or false")),
            },
            TraitType::Timestamp => crate::tags::resolve::parse_as_of(text)
                .map(exact)
                .map_err(|_| self.mismatch(text, "a point in time such as \"2026-11-01\"")),
            _ => {
                if let Ok(value) = text.parse::<i64>() {
                    return Ok(exact(value));
                }
                let value = self.double(text)?;
                if value.fract() == 0.0 && value.abs() < 9.2e18 {
                    return Ok(exact(value as i64));
                }
                let admitted = if low { value.ceil() } else { value.floor() };
                if admitted.abs() >= 9.2e18 {
                    return Err(self.mismatch(text, "within the range of BIGINT"));
                }
                Ok(Bound::Included(admitted as i64))
            }
        }
    }
}

/// A bitmap of `keys` (in any order), built from them sorted.
fn sorted_bitmap(keys: &[u64]) -> RoaringTreemap {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    RoaringTreemap::from_sorted_iter(sorted).expect("sorted keys")
}

/// The positions `start..end` of the sorted `values` within the bounds.
fn positions<T: PartialOrd + ?Sized, V: std::borrow::Borrow<T>>(
    values: &[V],
    low: Bound<&T>,
    high: Bound<&T>,
) -> (usize, usize) {
    let start = match low {
        Bound::Unbounded => 0,
        Bound::Included(v) => values.partition_point(|x| x.borrow() < v),
        Bound::Excluded(v) => values.partition_point(|x| x.borrow() <= v),
    };
    let end = match high {
        Bound::Unbounded => values.len(),
        Bound::Included(v) => values.partition_point(|x| x.borrow() <= v),
        Bound::Excluded(v) => values.partition_point(|x| x.borrow() < v),
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use cohort_sql_extensions::bitmap::expression::TagExpr;

    use super::*;

    fn select(index: &TraitIndex, term: &str) -> Result<Vec<u64>> {
        let expr = TagExpr::parse(term).unwrap();
        let ranges = expr.terms()[0].ranges().unwrap();
        Ok(index.select(&ranges)?.iter().collect())
    }

    /// Ranges over many blocks equal a filter of the values, at every edge alignment.
    #[test]
    fn ranges_across_blocks_equal_a_filter() {
        let rows = 3 * BLOCK + 123;
        let values: Vec<i64> = (0..rows as i64).map(|i| (i * 7919) % 5000).collect();
        let keys: ArrayRef = Arc::new(Int64Array::from_iter_values((0..rows as i64).rev()));
        let array: ArrayRef = Arc::new(Int64Array::from(values.clone()));
        let index = TraitIndex::build(
            "n",
            TraitType::Bigint,
            std::slice::from_ref(&keys),
            &[array],
        )
        .unwrap();
        for (low, high) in [
            (0, 4999),
            (1, 2),
            (100, 4100),
            (2500, 2500),
            (4998, 9000),
            (-5, 0),
        ] {
            let expected: Vec<u64> = (0..rows)
                .filter(|&i| (low..=high).contains(&values[i]))
                .map(|i| (rows - 1 - i) as u64)
                .rev()
                .collect();
            let mut expected = expected;
            expected.sort_unstable();
            assert_eq!(
                select(&index, &format!("n:[{low},{high}]")).unwrap(),
                expected,
                "[{low},{high}]"
            );
        }
    }

    #[test]
    fn ranges_select_by_binary_search_with_every_bound_kind() {
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5]));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(5),
            Some(1),
            None,
            Some(3),
            Some(3),
            Some(9),
        ]));
        let index = TraitIndex::build(
            "n",
            TraitType::Bigint,
            std::slice::from_ref(&keys),
            &[values],
        )
        .unwrap();
        assert_eq!(index.len(), 5);
        assert_eq!(select(&index, "n >= 3").unwrap(), [0, 3, 4, 5]);
        assert_eq!(select(&index, "n > 3").unwrap(), [0, 5]);
        assert_eq!(select(&index, "n < 3").unwrap(), [1]);
        assert_eq!(select(&index, "n = 3").unwrap(), [3, 4]);
        assert_eq!(select(&index, "n != 3").unwrap(), [0, 1, 5]);
        assert_eq!(select(&index, "n:[1,5)").unwrap(), [1, 3, 4]);
        assert_eq!(select(&index, "n:(1,5]").unwrap(), [0, 3, 4]);
        assert_eq!(select(&index, "n:[6,)").unwrap(), [5]);
        assert_eq!(select(&index, "n:(,)").unwrap(), [0, 1, 3, 4, 5]);
        // Fractions on a BIGINT admit the integers on their side.
        assert_eq!(select(&index, "n >= 2.5").unwrap(), [0, 3, 4, 5]);
        assert_eq!(select(&index, "n < 3.5").unwrap(), [1, 3, 4]);
        assert_eq!(select(&index, "n = 3.5").unwrap(), Vec::<u64>::new());
        let error = select(&index, "n > abc").unwrap_err().to_string();
        assert_eq!(error, "trait 'n' is BIGINT: 'abc' is not a number");

        let doubles: ArrayRef = Arc::new(Float64Array::from(vec![
            0.5,
            f64::NAN,
            -2.0,
            1e3,
            0.5,
            7.25,
        ]));
        let index = TraitIndex::build(
            "d",
            TraitType::Double,
            std::slice::from_ref(&keys),
            &[doubles],
        )
        .unwrap();
        assert_eq!(select(&index, "d:[-2,1)").unwrap(), [0, 2, 4]);
        assert_eq!(select(&index, "d > 7.25").unwrap(), [3]);

        let texts: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "c", "b", "ab", "z"]));
        let index = TraitIndex::build("t", TraitType::Text, &[keys], &[texts]).unwrap();
        assert_eq!(select(&index, "t = b").unwrap(), [0, 3]);
        assert_eq!(select(&index, "t:[a,b)").unwrap(), [1, 4]);
        assert_eq!(select(&index, "t >= \"c\"").unwrap(), [2, 5]);
    }
}
