//! Deterministic experiment splits: every user falls in one of 10,000 buckets by a salted hash
//! of their key, and weighted groups take consecutive bucket ranges.
//!
//! | function | result |
//! |---|---|
//! | `split_bucket(user_key, 'seed')` | the user's bucket, 0 to 9999 (Int32); NULL key -> NULL |
//! | `split_group(user_key, 'seed', 'treatment 45, control 45, holdout 10')` | the user's group (Utf8) |
//!
//! ```sql
//! SELECT split_group(user_key, 'spring_sale', 'a 50, b 50') AS arm, count(*)
//! FROM profiles GROUP BY arm;
//! ```
//!
//! The bucket depends only on the key and the seed (xxHash64 of the key, salted with the
//! xxHash64 of the seed), never on who else is in a segment or when it was computed: a user
//! keeps their group across refreshes, and two seeds split users independently. Segments
//! declared with `SPLIT (...) [SEED '...']` and holdouts (`CREATE HOLDOUT`) use these functions,
//! so a query can reproduce their groups.
//!
//! Weights are percentages with up to two decimals that sum to 100; groups take buckets in the
//! order written (`a 45` is buckets 0-4499).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use twox_hash::XxHash64;

use crate::bitmap::id_rows;

/// Buckets a split divides users into: weights have a precision of 0.01 percentage points.
pub const BUCKETS: u32 = 10_000;

pub const SPLIT_BUCKET: &str = "split_bucket";
pub const SPLIT_GROUP: &str = "split_group";

/// The bucket of `key` under `seed`, in `0..BUCKETS`.
pub fn bucket(seed: &str, key: u64) -> u32 {
    let salt = XxHash64::oneshot(0, seed.as_bytes());
    bucket_salted(salt, key)
}

fn bucket_salted(salt: u64, key: u64) -> u32 {
    let hash = XxHash64::oneshot(salt, &key.to_le_bytes());
    // Multiply-shift maps the hash onto the buckets from its high bits, without modulo bias.
    ((u128::from(hash) * u128::from(BUCKETS)) >> 64) as u32
}

/// Named groups by weight, e.g. `treatment 45, control 45, holdout 10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitGroups {
    /// Each group with the first bucket past its range, ascending.
    groups: Vec<(String, u32)>,
}

impl SplitGroups {
    /// Parses `name weight, name weight, ...`; names are words, weights sum to 100.
    pub fn parse(text: &str) -> Result<Self> {
        let mut groups: Vec<(String, u32)> = Vec::new();
        let mut end = 0u32;
        for part in text.split(',') {
            let mut words = part.split_whitespace();
            let (Some(name), Some(weight), None) = (words.next(), words.next(), words.next())
            else {
                return plan_err!(
                    "split: expected 'name weight' pairs separated by commas, e.g. \
                     'treatment 45, control 45, holdout 10', found '{}'",
                    part.trim()
                );
            };
            let valid_name = name.chars().next().is_some_and(char::is_alphabetic)
                && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !valid_name {
                return plan_err!(
                    "split: group name '{name}' must be a word (letters, digits, '_')"
                );
            }
            let name = name.to_lowercase();
            if groups.iter().any(|(g, _)| *g == name) {
                return plan_err!("split: group '{name}' is named twice");
            }
            let buckets = weight_buckets(weight)?;
            end += buckets;
            groups.push((name, end));
        }
        if end != BUCKETS {
            let total = f64::from(end) / 100.0;
            return plan_err!("split: the weights sum to {total}, not 100");
        }
        Ok(Self { groups })
    }

    /// The group of a bucket.
    pub fn group_of_bucket(&self, bucket: u32) -> &str {
        let index = self.groups.partition_point(|(_, end)| *end <= bucket);
        &self.groups[index.min(self.groups.len() - 1)].0
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|(name, _)| name.as_str())
    }

    /// The group of `key` under `seed`.
    pub fn group(&self, seed: &str, key: u64) -> &str {
        self.group_of_bucket(bucket(seed, key))
    }
}

impl std::fmt::Display for SplitGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut start = 0;
        for (i, (name, end)) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let buckets = end - start;
            start = *end;
            if buckets % 100 == 0 {
                write!(f, "{name} {}", buckets / 100)?;
            } else {
                write!(f, "{name} {}.{:02}", buckets / 100, buckets % 100)?;
            }
        }
        Ok(())
    }
}

/// A percentage with at most two decimals (`45`, `12.5`, `0.25`) in buckets (hundredths of a
/// percent); `None` for anything else. Weights and holdout shares are both read with it.
pub fn percent_in_buckets(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || fraction.len() > 2 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let fraction: u32 = format!("{fraction:0<2}").parse().ok()?;
    whole
        .parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(fraction)
}

/// A weight in percent as a number of buckets.
fn weight_buckets(text: &str) -> Result<u32> {
    match percent_in_buckets(text) {
        Some(buckets) if buckets > 0 && buckets <= BUCKETS => Ok(buckets),
        _ => plan_err!(
            "split: weight '{text}' must be a percentage above 0 with at most two decimals"
        ),
    }
}

pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(SplitFunction::new(false))),
        Arc::new(ScalarUDF::from(SplitFunction::new(true))),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitFunction {
    grouped: bool,
    signature: Signature,
}

impl SplitFunction {
    fn new(grouped: bool) -> Self {
        Self {
            grouped,
            signature: Signature::any(if grouped { 3 } else { 2 }, Volatility::Immutable),
        }
    }
}

fn constant_text(function: &str, position: usize, arg: &ColumnarValue) -> Result<String> {
    match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s.clone()),
        _ => plan_err!("{function}: argument {position} must be a constant, non-NULL string"),
    }
}

impl ScalarUDFImpl for SplitFunction {
    fn name(&self) -> &str {
        if self.grouped {
            SPLIT_GROUP
        } else {
            SPLIT_BUCKET
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !arg_types[0].is_integer() && !arg_types[0].is_null() {
            return plan_err!(
                "{}: the key must be an integer (user_key), got {}",
                self.name(),
                arg_types[0]
            );
        }
        Ok(if self.grouped {
            DataType::Utf8
        } else {
            DataType::Int32
        })
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let seed = constant_text(name, 2, &args.args[1])?;
        let groups = if self.grouped {
            Some(SplitGroups::parse(&constant_text(name, 3, &args.args[2])?)?)
        } else {
            None
        };
        let keys: ArrayRef = args.args[0].to_array(args.number_rows)?;
        let salt = XxHash64::oneshot(0, seed.as_bytes());
        let buckets = id_rows(name, &keys)?
            .into_iter()
            .map(|key| key.map(|key| bucket_salted(salt, key)));
        let result: ArrayRef = match groups {
            None => Arc::new(buckets.map(|b| b.map(|b| b as i32)).collect::<Int32Array>()),
            Some(groups) => Arc::new(
                buckets
                    .map(|b| b.map(|b| groups.group_of_bucket(b)))
                    .collect::<StringArray>(),
            ),
        };
        debug_assert_eq!(result.len(), args.number_rows);
        Ok(ColumnarValue::Array(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_consecutive_buckets_in_order() {
        let groups = SplitGroups::parse("Treatment 45, control 45.5 ,holdout 9.5").unwrap();
        assert_eq!(groups.group_of_bucket(0), "treatment");
        assert_eq!(groups.group_of_bucket(4499), "treatment");
        assert_eq!(groups.group_of_bucket(4500), "control");
        assert_eq!(groups.group_of_bucket(9049), "control");
        assert_eq!(groups.group_of_bucket(9050), "holdout");
        assert_eq!(groups.group_of_bucket(9999), "holdout");
        assert_eq!(
            groups.to_string(),
            "treatment 45, control 45.50, holdout 9.50"
        );
        assert_eq!(SplitGroups::parse(&groups.to_string()).unwrap(), groups);
    }

    #[test]
    fn bad_splits_say_what_is_wrong() {
        for (text, message) in [
            ("a 50, b 40", "the weights sum to 90, not 100"),
            ("a 50, b 50.01", "sum to 100.01"),
            ("a 50 b 50", "expected 'name weight' pairs"),
            ("a 50, a 50", "group 'a' is named twice"),
            ("a 100, b 0", "weight '0' must be a percentage above 0"),
            ("a 99.999, b 0.001", "at most two decimals"),
            ("1a 50, b 50", "must be a word"),
            ("a -5, b 105", "weight '-5'"),
        ] {
            let error = SplitGroups::parse(text).unwrap_err().to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn buckets_are_uniform_and_seeds_independent() {
        let keys = 200_000u64;
        let mut counts = vec![0u32; 10];
        let mut same_decile = 0;
        for key in 0..keys {
            let a = bucket("one", key);
            assert!(a < BUCKETS);
            counts[(a / 1000) as usize] += 1;
            same_decile += u32::from(a / 1000 == bucket("two", key) / 1000);
        }
        // Each decile within 2% of its share; two seeds agree on a decile about 1 time in 10.
        for count in counts {
            assert!((19_600..=20_400).contains(&count), "{count}");
        }
        assert!((19_400..=20_600).contains(&same_decile), "{same_decile}");
        assert_eq!(bucket("one", 42), bucket("one", 42));
    }
}
