//! Event-time arguments shared by the behavioural functions: a timestamp column of any Arrow
//! time type is read as `i64` in its own unit, and a window (INTERVAL or integer) is converted
//! to that unit.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::common::constant;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

/// Whether `data_type` can be an event-time argument.
pub fn is_event_time(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) || data_type.is_integer()
}

/// Checks that argument `index` of `function` (counted from 0, named from 1) is an event time.
pub fn check_event_time(function: &str, types: &[DataType], index: usize) -> Result<()> {
    if is_event_time(&types[index]) {
        return Ok(());
    }
    plan_err!(
        "{function}: the event time (argument {}) must be a timestamp, date or integer, got {}",
        index + 1,
        types[index]
    )
}

/// Nanoseconds in one unit of an event-time type, or `None` for plain integers.
fn nanos_per_unit(data_type: &DataType) -> Option<i128> {
    match data_type {
        DataType::Timestamp(TimeUnit::Second, _) => Some(NANOS_PER_SECOND),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date64 => Some(1_000_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(1),
        DataType::Date32 => Some(NANOS_PER_DAY),
        _ => None,
    }
}

/// Converts a window literal to event-time units. An integer window is seconds for timestamps,
/// days for `Date32` and raw units for integer event times; an INTERVAL needs a time type and
/// may not use months (their length varies). Partial units are dropped.
pub fn window_in_units(function: &str, window: &ScalarValue, ts_type: &DataType) -> Result<i64> {
    let per_unit = nanos_per_unit(ts_type);
    let nanos: Option<i128> = match window {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return plan_err!(
                    "{function}: the window may not be given in months or years (their length varies); use days"
                );
            }
            Some(v.days as i128 * NANOS_PER_DAY + v.nanoseconds as i128)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i128 * NANOS_PER_DAY + v.milliseconds as i128 * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(_)) => {
            return plan_err!(
                "{function}: the window may not be given in months or years (their length varies); use days"
            );
        }
        _ => None,
    };
    let units: i128 = match (nanos, per_unit) {
        (Some(_), None) => {
            return plan_err!(
                "{function}: an INTERVAL window needs a timestamp or date event time; with integer event times give the window as an integer"
            );
        }
        (Some(nanos), Some(per_unit)) => nanos / per_unit,
        (None, _) => {
            let Some(raw) = integer_value(window) else {
                return plan_err!(
                    "{function}: the window must be a constant INTERVAL or integer, got {window}"
                );
            };
            match ts_type {
                DataType::Timestamp(..) | DataType::Date64 => {
                    raw * NANOS_PER_SECOND / per_unit.expect("time type")
                }
                _ => raw,
            }
        }
    };
    if units <= 0 {
        let given = match nanos {
            Some(nanos) => format!("an INTERVAL of {} seconds", nanos as f64 / 1e9),
            None => window.to_string(),
        };
        return plan_err!("{function}: the window must be positive, got {given}");
    }
    Ok(i64::try_from(units).unwrap_or(i64::MAX))
}

/// An integer duration in event-time units: seconds for timestamps, days for `Date32`, raw
/// units for integer event times.
pub fn integer_amount_in_units(raw: i128, ts_type: &DataType) -> i128 {
    match (ts_type, nanos_per_unit(ts_type)) {
        (DataType::Timestamp(..) | DataType::Date64, Some(per_unit)) => {
            raw.saturating_mul(NANOS_PER_SECOND) / per_unit
        }
        _ => raw,
    }
}

fn integer_value(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::Int8(Some(v)) => Some(*v as i128),
        ScalarValue::Int16(Some(v)) => Some(*v as i128),
        ScalarValue::Int32(Some(v)) => Some(*v as i128),
        ScalarValue::Int64(Some(v)) => Some(*v as i128),
        ScalarValue::UInt8(Some(v)) => Some(*v as i128),
        ScalarValue::UInt16(Some(v)) => Some(*v as i128),
        ScalarValue::UInt32(Some(v)) => Some(*v as i128),
        ScalarValue::UInt64(Some(v)) => Some(*v as i128),
        _ => None,
    }
}

/// The event-time column as `i64` values in its own unit (nulls preserved).
pub fn event_times(array: &ArrayRef) -> Result<Int64Array> {
    Ok(match array.data_type() {
        DataType::Int64 => array.as_primitive().clone(),
        DataType::Timestamp(..) | DataType::Date64 => {
            let values = array.to_data();
            Int64Array::from(values.into_builder().data_type(DataType::Int64).build()?)
        }
        _ => {
            let options = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(array, &DataType::Int64, &options)?
                .as_primitive()
                .clone()
        }
    })
}

/// Turns `i64` event times back into values of the event-time type.
pub fn to_event_time_array(values: Int64Array, ts_type: &DataType) -> Result<ArrayRef> {
    Ok(match ts_type {
        DataType::Timestamp(..) | DataType::Date64 => {
            let data = values
                .into_data()
                .into_builder()
                .data_type(ts_type.clone())
                .build()?;
            arrow::array::make_array(data)
        }
        other => cast_with_options(&values, other, &CastOptions::default())?,
    })
}

/// A constant point in time (argument `index`, named `what` in errors) in the units of the
/// event-time type, such as the origin periods are counted from.
pub fn constant_time(
    function: &str,
    args: &AccumulatorArgs,
    index: usize,
    what: &str,
    ts_type: &DataType,
) -> Result<i64> {
    let given = constant(function, args, index, what)?;
    let Ok(converted) = given.cast_to(ts_type) else {
        return plan_err!(
            "{function}: the {what} must be a point in time like the event time ({ts_type}), got {given}"
        );
    };
    let times = event_times(&converted.to_array()?)?;
    if times.is_null(0) {
        return plan_err!("{function}: the {what} may not be NULL");
    }
    Ok(times.value(0))
}

/// Reads a boolean condition column; NULL counts as false.
pub fn condition(array: &ArrayRef, row: usize) -> bool {
    match array.data_type() {
        DataType::Boolean => {
            let values = array.as_boolean();
            values.is_valid(row) && values.value(row)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::IntervalMonthDayNano;

    #[test]
    fn windows_convert_to_the_event_time_unit() {
        let us = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let hour = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
            0,
            0,
            3_600 * 1_000_000_000,
        )));
        assert_eq!(window_in_units("f", &hour, &us).unwrap(), 3_600_000_000);
        assert_eq!(
            window_in_units("f", &ScalarValue::Int64(Some(60)), &us).unwrap(),
            60_000_000
        );
        let seconds = DataType::Timestamp(TimeUnit::Second, None);
        assert_eq!(
            window_in_units("f", &ScalarValue::Int64(Some(60)), &seconds).unwrap(),
            60
        );
        assert_eq!(
            window_in_units("f", &ScalarValue::Int32(Some(7)), &DataType::Date32).unwrap(),
            7
        );
        let two_days = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 2, 0)));
        assert_eq!(
            window_in_units("f", &two_days, &DataType::Date32).unwrap(),
            2
        );
        assert_eq!(
            window_in_units("f", &ScalarValue::UInt8(Some(5)), &DataType::UInt32).unwrap(),
            5
        );
    }

    #[test]
    fn bad_windows_are_errors() {
        let us = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert!(
            window_in_units("f", &ScalarValue::Int64(Some(0)), &us)
                .unwrap_err()
                .to_string()
                .contains("must be positive")
        );
        assert!(window_in_units("f", &ScalarValue::Int64(Some(-5)), &us).is_err());
        let month = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0)));
        assert!(
            window_in_units("f", &month, &us)
                .unwrap_err()
                .to_string()
                .contains("months")
        );
        let minute = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
            0,
            0,
            60_000_000_000,
        )));
        assert!(
            window_in_units("f", &minute, &DataType::Int64)
                .unwrap_err()
                .to_string()
                .contains("INTERVAL window")
        );
        assert!(window_in_units("f", &ScalarValue::Utf8(Some("1h".into())), &us).is_err());
    }
}
