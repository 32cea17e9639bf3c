//! Conditions: the boolean arguments of `window_funnel`, `window_funnel_steps`, `retention`,
//! `sequence_match` and `sequence_count`, packed one bit per condition into a `u32` per row.
//!
//! Calls mostly test one expression against constants: `event = 'page_view', event =
//! 'add_to_cart', ...`, or `CAST(ts AS DATE) = DATE '2026-09-01'` for each day of a retention.
//! Evaluated as written that is one comparison kernel and one boolean array per condition, and
//! a pass to pack them — most of a retention query's time. So each of these functions'
//! `simplify` ([`pack_conditions`]) rewrites such a call to take the packed bits as one
//! argument, `condition_mask(x, c1, ..., cN)`, computed in one pass over `x`:
//!
//! ```text
//! retention(x = c1, x = c2, x = c3)  =>  retention(condition_mask(x, c1, c2, c3))
//! ```
//!
//! When `x` is `utc_date(ts)` (what `CAST(ts AS DATE)` of a UTC timestamp becomes) the mask is
//! computed from `ts`, looking each timestamp's day up in a table of the asked days instead of
//! computing a column of dates: `condition_mask(ts, DATE '2026-09-01', ...)`.
//!
//! The rewrite keeps the call's output name and its results: bit `i` is set exactly where
//! `x = ci` is true, and `x = ci` is NULL — false for these functions — where `x` is NULL. It
//! applies when every condition is `x = constant` with the same deterministic `x` (two
//! conditions at least) and `x` is an integer, date, timestamp or string; any other call runs
//! as written. `condition_mask` shows in `EXPLAIN`; it is not a function SQL can name.

use std::sync::{Arc, LazyLock};

use arrow::array::builder::make_view;
use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, GenericStringArray,
    OffsetSizeTrait, StringViewArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{ScalarValue, internal_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    AggregateUDF, BinaryExpr, ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use crate::utc_date::{UtcDate, utc_dates, utc_day_masks};

/// Conditions one call may take: a row's conditions are packed into a `u32`.
pub const MAX_CONDITIONS: usize = 32;

/// Checks a function's condition arguments and returns how many conditions the call has:
/// as written, each boolean (or a NULL literal, which never holds); or, for a call that
/// [`pack_conditions`] rewrote to `packed` conditions, their one mask argument.
pub fn check_conditions(
    function: &str,
    conditions: &[DataType],
    packed: Option<usize>,
) -> Result<usize> {
    if let Some(count) = packed {
        return match conditions {
            [DataType::UInt32] => Ok(count),
            other => internal_err!("{function}: expected one packed condition mask, got {other:?}"),
        };
    }
    if conditions.len() > MAX_CONDITIONS {
        return plan_err!(
            "{function} takes at most {MAX_CONDITIONS} conditions, got {}",
            conditions.len()
        );
    }
    for (i, condition) in conditions.iter().enumerate() {
        if !matches!(condition, DataType::Boolean | DataType::Null) {
            return plan_err!(
                "{function}: condition {} must be boolean, got {condition}",
                i + 1
            );
        }
    }
    Ok(conditions.len())
}

/// Checks that argument `index` of `function` (counted from 0, named from 1), the condition
/// `what` names, is boolean (a NULL literal is too: it never holds).
pub fn check_boolean(function: &str, what: &str, types: &[DataType], index: usize) -> Result<()> {
    if matches!(types[index], DataType::Boolean | DataType::Null) {
        return Ok(());
    }
    plan_err!(
        "{function}: the {what} (argument {}) must be boolean, got {}",
        index + 1,
        types[index]
    )
}

/// [`condition_masks`] of at most 8 conditions as bytes: the per-event value of the event-list
/// functions with few conditions (one activity condition, a start and a return condition).
pub fn small_condition_masks(conditions: &[ArrayRef], rows: usize) -> Vec<u8> {
    debug_assert!(conditions.len() <= 8);
    condition_masks(conditions, rows, None)
        .iter()
        .map(|&mask| mask as u8)
        .collect()
}

/// Per row, bit `i` set when condition `i` holds (true, not NULL) and the filter keeps the row.
/// `conditions` are the call's condition columns, or its one packed mask column. Conditions of
/// a NULL type (a literal NULL) never hold. Walking each condition's set bits is much cheaper
/// than testing every condition on every row, as conditions are mostly false.
pub fn condition_masks(
    conditions: &[ArrayRef],
    rows: usize,
    filter: Option<&BooleanArray>,
) -> ScalarBuffer<u32> {
    if let [packed] = conditions
        && let Some(packed) = packed.as_primitive_opt::<UInt32Type>()
    {
        let mut kept = packed.nulls().map(|n| n.inner().clone());
        if let Some(filter) = filter {
            let rows = true_rows(filter, None);
            kept = Some(kept.map_or_else(|| rows.clone(), |k| &k & &rows));
        }
        // Every row kept, the usual case: the mask column as it is, without a copy.
        let Some(kept) = kept.filter(|k| k.count_set_bits() < k.len()) else {
            return packed.values().clone();
        };
        let mut masks = packed.values().to_vec();
        clear_rows_not_in(&mut masks, &kept);
        return masks.into();
    }
    let mut masks = vec![0u32; rows];
    for (bit, condition) in conditions.iter().enumerate() {
        if let Some(condition) = condition.as_boolean_opt() {
            for row in true_rows(condition, filter).set_indices() {
                masks[row] |= 1 << bit;
            }
        }
    }
    masks.into()
}

/// Rows where `condition` is true (not NULL) and the aggregate filter, if any, keeps the row,
/// as a bitmap whose set bits can be walked word by word instead of row by row.
fn true_rows(condition: &BooleanArray, filter: Option<&BooleanArray>) -> BooleanBuffer {
    let mut rows = match condition.nulls() {
        Some(nulls) => condition.values() & nulls.inner(),
        None => condition.values().clone(),
    };
    if let Some(filter) = filter {
        rows = &rows & filter.values();
        if let Some(nulls) = filter.nulls() {
            rows = &rows & nulls.inner();
        }
    }
    rows
}

/// The `simplify` of a function whose arguments from `first` on are conditions: the call
/// with its conditions packed into one `condition_mask` argument, made by `packed` (the same
/// function taking that many packed conditions), or the call unchanged where packing does not
/// apply. See the module documentation.
pub fn pack_conditions(
    call: AggregateFunction,
    first: usize,
    info: &SimplifyContext,
    packed: impl FnOnce(usize) -> AggregateUDF,
) -> Result<Expr> {
    let Some((x, constants)) = equality_tests(&call, first, info) else {
        return Ok(Expr::AggregateFunction(call));
    };
    let count = constants.len();
    let AggregateFunction { params, .. } = call;
    let mut args = params.args;
    args.truncate(first);
    args.push(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::clone(&CONDITION_MASK),
        std::iter::once(x)
            .chain(constants.into_iter().map(|c| Expr::Literal(c, None)))
            .collect(),
    )));
    Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(packed(count)),
        args,
        params.distinct,
        params.filter,
        params.order_by,
        params.null_treatment,
    )))
}

/// `x` and the constants, when every condition of `call` is `x = constant` (either way round)
/// for one deterministic `x` of a type [`equality_masks`] supports, and there are 2 to 32.
fn equality_tests(
    call: &AggregateFunction,
    first: usize,
    info: &SimplifyContext,
) -> Option<(Expr, Vec<ScalarValue>)> {
    let params = &call.params;
    if params.distinct || !params.order_by.is_empty() {
        return None;
    }
    let conditions = params.args.get(first..)?;
    if !(2..=MAX_CONDITIONS).contains(&conditions.len()) {
        return None;
    }
    let mut tested: Option<Expr> = None;
    let mut constants = Vec::with_capacity(conditions.len());
    for condition in conditions {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = condition.clone().unalias_nested().data
        else {
            return None;
        };
        let (x, constant) = match (*left, *right) {
            (x, Expr::Literal(c, _)) | (Expr::Literal(c, _), x) if !c.is_null() => (x, c),
            _ => return None,
        };
        match &tested {
            Some(seen) if *seen != x => return None,
            Some(_) => {}
            None => tested = Some(x),
        }
        constants.push(constant);
    }
    let x = tested?;
    let x_type = info.get_data_type(&x).ok()?;
    let same_types = constants.iter().all(|c| c.data_type() == x_type);
    if !(same_types && supports(&x_type) && !x.is_volatile()) {
        return None;
    }
    // Dates of a timestamp: compare the timestamp with each day's bounds instead.
    match x {
        Expr::ScalarFunction(ScalarFunction { func, mut args })
            if func.inner().downcast_ref::<UtcDate>().is_some() && args.len() == 1 =>
        {
            Some((args.remove(0), constants))
        }
        x => Some((x, constants)),
    }
}

/// Types [`equality_masks`] compares. Floats are left out: SQL's `=` on them is not bitwise.
fn supports(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
        )
}

/// Per row of `x`, bit `i` set when `x = constants[i]`; 0 where `x` is NULL. Each constant
/// must have `x`'s type, except that a timestamp `x` with date constants compares its UTC date.
pub fn equality_masks(x: &dyn Array, constants: &[ScalarValue]) -> Result<Vec<u32>> {
    if constants.len() > MAX_CONDITIONS {
        return plan_err!("condition_mask takes at most {MAX_CONDITIONS} constants");
    }
    let mut masks = match (x.data_type(), dates(constants)) {
        (DataType::Timestamp(_, _), Some(days)) => match utc_day_masks(x, &days) {
            Some(masks) => masks,
            // Days far apart, or timestamps outside the calendar: through their dates.
            None => return equality_masks(utc_dates(x)?.as_ref(), constants),
        },
        _ => same_type_masks(x, constants)?,
    };
    if let Some(nulls) = x.logical_nulls() {
        clear_rows_not_in(&mut masks, nulls.inner());
    }
    Ok(masks)
}

/// [`equality_masks`] of constants of `x`'s own type, NULL slots not yet cleared.
fn same_type_masks(x: &dyn Array, constants: &[ScalarValue]) -> Result<Vec<u32>> {
    if let Some(c) = constants.iter().find(|c| c.data_type() != *x.data_type()) {
        return plan_err!(
            "condition_mask: constant {c} is {}, not {}",
            c.data_type(),
            x.data_type()
        );
    }
    Ok(match x.data_type() {
        DataType::Int8 => primitive_masks::<Int8Type>(x, constants)?,
        DataType::Int16 => primitive_masks::<Int16Type>(x, constants)?,
        DataType::Int32 => primitive_masks::<Int32Type>(x, constants)?,
        DataType::Int64 => primitive_masks::<Int64Type>(x, constants)?,
        DataType::UInt8 => primitive_masks::<UInt8Type>(x, constants)?,
        DataType::UInt16 => primitive_masks::<UInt16Type>(x, constants)?,
        DataType::UInt32 => primitive_masks::<UInt32Type>(x, constants)?,
        DataType::UInt64 => primitive_masks::<UInt64Type>(x, constants)?,
        DataType::Date32 => primitive_masks::<Date32Type>(x, constants)?,
        DataType::Date64 => primitive_masks::<Date64Type>(x, constants)?,
        DataType::Timestamp(TimeUnit::Second, _) => {
            primitive_masks::<TimestampSecondType>(x, constants)?
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            primitive_masks::<TimestampMillisecondType>(x, constants)?
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            primitive_masks::<TimestampMicrosecondType>(x, constants)?
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            primitive_masks::<TimestampNanosecondType>(x, constants)?
        }
        DataType::Utf8View => view_masks(x.as_string_view(), &strings(constants)?),
        DataType::Utf8 => string_masks(x.as_string::<i32>(), &strings(constants)?),
        DataType::LargeUtf8 => string_masks(x.as_string::<i64>(), &strings(constants)?),
        other => return plan_err!("condition_mask does not compare {other}"),
    })
}

/// Constants outer, rows inner: each pass is one comparison over a contiguous column, which
/// the compiler vectorises.
fn primitive_masks<T: ArrowPrimitiveType>(
    x: &dyn Array,
    constants: &[ScalarValue],
) -> Result<Vec<u32>> {
    let values = x.as_primitive::<T>().values();
    let mut masks = vec![0u32; values.len()];
    for (bit, constant) in constants.iter().enumerate() {
        let wanted = constant.to_array()?.as_primitive::<T>().value(0);
        for (mask, value) in masks.iter_mut().zip(values.iter()) {
            *mask |= u32::from(*value == wanted) << bit;
        }
    }
    Ok(masks)
}

/// The days of constants that are all dates, the form `utc_date(ts) = DATE '...'` packs to.
fn dates(constants: &[ScalarValue]) -> Option<Vec<i32>> {
    constants
        .iter()
        .map(|c| match c {
            ScalarValue::Date32(Some(day)) => Some(*day),
            _ => None,
        })
        .collect()
}

fn strings(constants: &[ScalarValue]) -> Result<Vec<&str>> {
    constants
        .iter()
        .map(|c| match c {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Ok(s.as_str()),
            other => plan_err!("condition_mask: expected a string constant, got {other}"),
        })
        .collect()
}

/// A string of at most 12 bytes is wholly inside its 16-byte view (length, bytes, zero
/// padding), so equality with a short constant is one 128-bit comparison. A longer value
/// matches only if its length and first 4 bytes (the view's low 64 bits) do; only those rows
/// read the data buffers.
fn view_masks(x: &StringViewArray, constants: &[&str]) -> Vec<u32> {
    let views = x.views();
    let mut masks = vec![0u32; views.len()];
    for (bit, constant) in constants.iter().enumerate() {
        let bytes = constant.as_bytes();
        let wanted = make_view(bytes, 0, 0);
        if bytes.len() <= 12 {
            for (mask, view) in masks.iter_mut().zip(views.iter()) {
                *mask |= u32::from(*view == wanted) << bit;
            }
        } else {
            let head = wanted as u64;
            for (row, (mask, view)) in masks.iter_mut().zip(views.iter()).enumerate() {
                if *view as u64 == head && x.value(row).as_bytes() == bytes {
                    *mask |= 1 << bit;
                }
            }
        }
    }
    masks
}

fn string_masks<O: OffsetSizeTrait>(x: &GenericStringArray<O>, constants: &[&str]) -> Vec<u32> {
    let offsets = x.value_offsets();
    let data = x.value_data();
    let mut masks = vec![0u32; x.len()];
    for (bit, constant) in constants.iter().enumerate() {
        let bytes = constant.as_bytes();
        for (mask, ends) in masks.iter_mut().zip(offsets.windows(2)) {
            let (start, end) = (ends[0].as_usize(), ends[1].as_usize());
            if end - start == bytes.len() && &data[start..end] == bytes {
                *mask |= 1 << bit;
            }
        }
    }
    masks
}

/// Zeroes the masks of rows whose bit in `kept` is unset (NULL, or filtered out).
fn clear_rows_not_in(masks: &mut [u32], kept: &BooleanBuffer) {
    for row in (!kept).set_indices() {
        masks[row] = 0;
    }
}

/// The one shared instance: plans compare functions by value, so every rewrite uses the same.
static CONDITION_MASK: LazyLock<Arc<ScalarUDF>> =
    LazyLock::new(|| Arc::new(ScalarUDF::from(ConditionMask::new())));

/// `condition_mask(x, c1, ..., cN) -> UInt32`: the packed form of `x = c1, ..., x = cN` (of
/// `utc_date(x) = c1, ...` for a timestamp `x` and dates `ci`), made only by [`pack_conditions`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConditionMask {
    signature: Signature,
}

impl ConditionMask {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ConditionMask {
    fn name(&self) -> &str {
        "condition_mask"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.split_first() {
            Some((x, constants)) if constants.iter().all(|c| c == x) && supports(x) => {
                Ok(DataType::UInt32)
            }
            Some((DataType::Timestamp(_, _), days))
                if days.iter().all(|d| *d == DataType::Date32) =>
            {
                Ok(DataType::UInt32)
            }
            _ => plan_err!(
                "condition_mask(x, c1, ..., cN) needs constants of x's type, got {arg_types:?}"
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some((x, rest)) = args.args.split_first() else {
            return plan_err!("condition_mask needs arguments");
        };
        let constants = rest
            .iter()
            .map(|c| match c {
                ColumnarValue::Scalar(c) => Ok(c.clone()),
                ColumnarValue::Array(_) => plan_err!("condition_mask: constants must be literals"),
            })
            .collect::<Result<Vec<_>>>()?;
        match x {
            ColumnarValue::Array(x) => Ok(ColumnarValue::Array(Arc::new(UInt32Array::from(
                equality_masks(x.as_ref(), &constants)?,
            )))),
            ColumnarValue::Scalar(x) => {
                let mask = equality_masks(x.to_array()?.as_ref(), &constants)?;
                Ok(ColumnarValue::Scalar(ScalarValue::UInt32(Some(mask[0]))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Date32Array, Int64Array, LargeStringArray, StringArray};
    use arrow::compute::kernels::cmp::eq;

    use super::*;

    /// The masks of `x` against `constants`, computed as written: one `=` kernel per constant.
    fn by_comparisons(x: &ArrayRef, constants: &[ScalarValue]) -> Vec<u32> {
        let conditions: Vec<ArrayRef> = constants
            .iter()
            .map(|c| Arc::new(eq(x, &c.to_scalar().unwrap()).unwrap()) as ArrayRef)
            .collect();
        condition_masks(&conditions, x.len(), None).to_vec()
    }

    #[test]
    fn masks_match_one_comparison_per_constant() {
        let long = "a value longer than twelve bytes";
        let texts = [
            Some("view"),
            None,
            Some(""),
            Some(long),
            Some("a value longer than twelve bytez"),
            Some("a value long"),
            Some("view"),
            Some("cart"),
        ];
        let string_constants = ["view", long, "", "cart", "missing", "a value long"];
        let cases: Vec<(ArrayRef, Vec<ScalarValue>)> = vec![
            (
                Arc::new(StringViewArray::from(texts.to_vec())),
                string_constants
                    .iter()
                    .map(|s| ScalarValue::Utf8View(Some(s.to_string())))
                    .collect(),
            ),
            (
                Arc::new(StringArray::from(texts.to_vec())),
                string_constants
                    .iter()
                    .map(|s| ScalarValue::Utf8(Some(s.to_string())))
                    .collect(),
            ),
            (
                Arc::new(LargeStringArray::from(texts.to_vec())),
                string_constants
                    .iter()
                    .map(|s| ScalarValue::LargeUtf8(Some(s.to_string())))
                    .collect(),
            ),
            (
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(-5),
                    Some(1),
                    Some(i64::MAX),
                ])),
                [1, i64::MAX, 7, -5]
                    .map(|v| ScalarValue::Int64(Some(v)))
                    .to_vec(),
            ),
            (
                Arc::new(Date32Array::from(vec![
                    Some(20_000),
                    Some(20_001),
                    None,
                    Some(20_007),
                ])),
                (0..8)
                    .map(|d| ScalarValue::Date32(Some(20_000 + d)))
                    .collect(),
            ),
        ];
        for (x, constants) in cases {
            let masks = equality_masks(x.as_ref(), &constants).unwrap();
            assert_eq!(masks, by_comparisons(&x, &constants), "{}", x.data_type());
            assert!(masks.iter().any(|&m| m != 0));
        }
    }

    #[test]
    fn dates_of_timestamps_match_their_utc_dates() {
        use arrow::array::{
            TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
            TimestampSecondArray,
        };
        // Each day's first and last instant, the instants either side, negative days, the ends
        // of the nanosecond range and NULLs, in every unit.
        let day = 86_400_i64;
        let seconds = [0, day - 1, day, -1, -day, -day - 1, 20_000 * day + 5, 123];
        // Days close together (looked up in a table), far apart and at the ends of the
        // nanosecond range (through dates).
        let day_sets: Vec<Vec<ScalarValue>> = [
            vec![0, 1, -1, -2, 7, 3],
            vec![0, 1, -1, -2, 20_000, 7, -106_752, 106_751],
            vec![106_750, 106_751],
        ]
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|d| ScalarValue::Date32(Some(d)))
                .collect()
        })
        .collect();
        let scaled = |per_second: i64| -> Vec<Option<i64>> {
            seconds
                .iter()
                .flat_map(|s| [Some(s * per_second), Some(s * per_second + per_second - 1)])
                .chain([None])
                .collect()
        };
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampSecondArray::from(scaled(1))),
            Arc::new(TimestampMillisecondArray::from(scaled(1_000))),
            Arc::new(TimestampMicrosecondArray::from(scaled(1_000_000)).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(
                [scaled(1_000_000_000), vec![Some(i64::MIN), Some(i64::MAX)]].concat(),
            )),
        ];
        for (x, days) in arrays
            .iter()
            .flat_map(|x| day_sets.iter().map(move |d| (x, d)))
        {
            let dates = utc_dates(x.as_ref()).unwrap();
            let expected = by_comparisons(&dates, days);
            assert_eq!(
                equality_masks(x.as_ref(), days).unwrap(),
                expected,
                "{} {days:?}",
                x.data_type()
            );
        }
        let all_days = &day_sets[1];
        let dates = utc_dates(arrays[0].as_ref()).unwrap();
        assert!(
            by_comparisons(&dates, all_days)
                .iter()
                .filter(|&&m| m != 0)
                .count()
                > 8
        );
    }

    #[test]
    fn dates_outside_the_calendar_fail_as_utc_date_does() {
        use arrow::array::TimestampSecondArray;
        let days = [ScalarValue::Date32(Some(0)), ScalarValue::Date32(Some(1))];
        let x = TimestampSecondArray::from(vec![0, i64::MAX]);
        let expected = utc_dates(&x).unwrap_err().to_string();
        let error = equality_masks(&x, &days).unwrap_err().to_string();
        assert_eq!(error, expected);
    }

    #[test]
    fn all_32_bits_are_used() {
        let x: ArrayRef = Arc::new(Int64Array::from_iter_values(0..40));
        let constants: Vec<ScalarValue> = (0..32).map(|v| ScalarValue::Int64(Some(v))).collect();
        let masks = equality_masks(x.as_ref(), &constants).unwrap();
        assert_eq!(masks[31], 1 << 31);
        assert_eq!(masks, by_comparisons(&x, &constants));
    }

    #[test]
    fn packed_masks_honour_nulls_and_the_filter() {
        let packed: ArrayRef = Arc::new(UInt32Array::from(vec![Some(3), None, Some(4), Some(1)]));
        let filter = BooleanArray::from(vec![Some(true), Some(true), None, Some(false)]);
        assert_eq!(
            condition_masks(&[Arc::clone(&packed)], 4, None),
            [3, 0, 4, 1]
        );
        assert_eq!(
            condition_masks(&[packed], 4, Some(&filter)).as_ref(),
            [3, 0, 0, 0]
        );
    }

    /// The optimized plan of `sql` over `t(e, d, x, f, ts)`, and its output column names.
    async fn plan_of(sql: &str) -> (String, Vec<String>) {
        let state = crate::session_state(
            datafusion::execution::SessionStateBuilder::new().with_default_features(),
        )
        .unwrap();
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        ctx.sql(
            "CREATE TABLE t AS SELECT * FROM (VALUES ('a', DATE '2026-09-01', 1, 1.5, \
             arrow_cast(TIMESTAMP '2026-09-01T10:00:00', 'Timestamp(Microsecond, Some(\"UTC\"))'))) \
             AS v(e, d, x, f, ts)",
        )
        .await
        .unwrap();
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let names = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        (plan.display_indent().to_string(), names)
    }

    #[tokio::test]
    async fn calls_testing_one_expression_against_constants_are_packed() {
        for (sql, packed) in [
            (
                "SELECT retention(e = 'a', e = 'b', 'c' = e) FROM t",
                "condition_mask(t.e, Utf8(\"a\"), Utf8(\"b\"), Utf8(\"c\"))",
            ),
            (
                "SELECT retention(CAST(d AS DATE) = DATE '2026-09-01', d = DATE '2026-09-02') FROM t",
                "condition_mask(t.d, Date32(\"2026-09-01\"), Date32(\"2026-09-02\"))",
            ),
            (
                "SELECT retention(CAST(ts AS DATE) = DATE '2026-09-01', CAST(ts AS DATE) = DATE '2026-09-02') FROM t",
                "retention(condition_mask(t.ts, Date32(\"2026-09-01\"), Date32(\"2026-09-02\")))",
            ),
            (
                "SELECT window_funnel(60, 'strict_order', x, x = 1, x = 2) FROM t",
                "window_funnel(Int64(60), Utf8(\"strict_order\"), t.x, condition_mask(",
            ),
            (
                "SELECT window_funnel_steps(60, x, x = 1, x = 2) FROM t",
                "window_funnel_steps(Int64(60), t.x, condition_mask(",
            ),
            (
                "SELECT sequence_count('(?1)(?2)', x, x + 1 = 2, x + 1 = 3) FROM t",
                "condition_mask(t.x + Int64(1), Int64(2), Int64(3))",
            ),
        ] {
            let (plan, names) = plan_of(sql).await;
            assert!(plan.contains(packed), "{sql}:\n{plan}");
            let written = sql
                .trim_start_matches("SELECT ")
                .trim_end_matches(" FROM t");
            assert_eq!(names.len(), 1);
            assert!(
                !names[0].contains("condition_mask"),
                "{sql}: output named {names:?}, not as written: {written}"
            );
        }
        for sql in [
            // Two different expressions, a non-constant, a float, one condition, a volatile
            // expression, a non-equality: evaluated as written.
            "SELECT retention(e = 'a', x = 1) FROM t",
            "SELECT retention(x = 1, x = x) FROM t",
            "SELECT retention(f = 1.5, f = 2.5) FROM t",
            "SELECT window_funnel(60, x, x = 1) FROM t",
            "SELECT retention(random() = 0.5, random() = 0.25) FROM t",
            "SELECT retention(x = 1, x > 1) FROM t",
        ] {
            let (plan, _) = plan_of(sql).await;
            assert!(!plan.contains("condition_mask"), "{sql}:\n{plan}");
        }
    }

    #[test]
    fn mismatched_constants_are_errors() {
        let x = Int64Array::from(vec![1]);
        let error = equality_masks(&x, &[ScalarValue::Int32(Some(1))]).unwrap_err();
        assert!(error.to_string().contains("is Int32, not Int64"), "{error}");
    }
}
