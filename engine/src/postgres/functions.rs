//! The functions PostgreSQL clients call that Cohort provides itself (beside
//! `datafusion-pg-catalog`'s): `version()`, `current_setting`, `to_regtype`,
//! `pg_encoding_to_char`, `json_build_object`, and the helpers the rewrites call.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int32Array, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, create_udf,
};

use super::VERSION;

/// `cohort_like_pattern(pattern, escape)`: see the LIKE rewrite.
pub(super) const LIKE_PATTERN: &str = "cohort_like_pattern";
/// `cohort_prefix_elements(array, prefix)`: `prefix || e` for every element `e`.
pub(super) const PREFIX_ELEMENTS: &str = "cohort_prefix_elements";

/// `cohort_pg_data_type(arrow_type)`: see the information_schema.columns rewrite.
pub(super) const PG_DATA_TYPE: &str = "cohort_pg_data_type";

/// The PostgreSQL version Cohort answers as (`server_version`).
pub const SERVER_VERSION: &str = "15.0";

/// The settings every PostgreSQL connection starts with, by lower-case name, as `SHOW` and
/// `current_setting` report them.
pub fn default_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "server_version" => SERVER_VERSION,
        "server_version_num" => "150000",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "transaction isolation level"
        | "transaction_isolation"
        | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" | "in_hot_standby" => "off",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "timezone" => "UTC",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "extra_float_digits" => "1",
        "application_name" => "",
        "bytea_output" => "hex",
        _ => return None,
    })
}

/// `current_setting(name [, missing_ok])`: the server's default of a setting (what a new
/// connection's `SHOW` says; a connection's own `SET` is answered by `SHOW`, not here). An
/// unknown name is an error unless `missing_ok`, as in PostgreSQL.
pub(super) fn current_setting_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CurrentSetting {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Stable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = datafusion::common::cast::as_string_array(&arrays[0])?;
        let missing_ok = arrays
            .get(1)
            .map(|array| datafusion::common::cast::as_boolean_array(array))
            .transpose()?;
        let mut values = StringBuilder::new();
        for row in 0..names.len() {
            if names.is_null(row) {
                values.append_null();
                continue;
            }
            let name = names.value(row);
            match default_setting(&name.to_ascii_lowercase()) {
                Some(value) => values.append_value(value),
                None if missing_ok.is_some_and(|ok| ok.is_valid(row) && ok.value(row)) => {
                    values.append_null()
                }
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(values.finish())))
    }
}

/// `cohort_prefix_elements(array, prefix)`: the text array with `prefix` before every element
/// (NULL stays NULL), the map `ARRAY(SELECT 'prefix' || x FROM unnest(array) x)` is rewritten to.
pub(super) fn prefix_elements_udf() -> ScalarUDF {
    let text_list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    create_udf(
        PREFIX_ELEMENTS,
        vec![text_list.clone(), DataType::Utf8],
        text_list,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let lists = datafusion::common::cast::as_list_array(&arrays[0])?;
            let prefixes = datafusion::common::cast::as_string_array(&arrays[1])?;
            let mut prefixed = ListBuilder::new(StringBuilder::new());
            for (row, prefix) in prefixes.iter().enumerate() {
                let (Some(prefix), true) = (prefix, lists.is_valid(row)) else {
                    prefixed.append_null();
                    continue;
                };
                let elements = lists.value(row);
                let elements = datafusion::common::cast::as_string_array(&elements)?;
                for element in elements.iter() {
                    match element {
                        Some(element) => {
                            prefixed.values().append_value(format!("{prefix}{element}"))
                        }
                        None => prefixed.values().append_null(),
                    }
                }
                prefixed.append(true);
            }
            Ok(ColumnarValue::Array(Arc::new(prefixed.finish())))
        }),
    )
}

/// `col_description(table, column)`, `obj_description(oid [, catalog])`,
/// `shobj_description(oid, catalog)`: NULL, Cohort's objects carry no comments (psql's `\d+`
/// and BI tools' table browsers read them). Also `pg_get_indexdef(index [, column, pretty])`:
/// Cohort's tables have no indexes (the catalog's indexes are PostgreSQL's own, whose
/// definitions it does not keep), which SQLAlchemy asks while reflecting a table's indexes.
pub(super) fn no_description_udf(name: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(NoDescription {
        name,
        signature: Signature::variadic_any(Volatility::Stable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NoDescription {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for NoDescription {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}

/// `pg_encoding_to_char(encoding)`: PostgreSQL's name of the encoding (`UTF8`, as psql's `\l`
/// shows it), NULL for a number that names none. The catalog's databases are all UTF8 (6).
pub(super) fn encoding_name_udf() -> ScalarUDF {
    create_udf(
        "pg_encoding_to_char",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let encodings = ColumnarValue::values_to_arrays(args)?;
            let encodings = datafusion::common::cast::as_int32_array(&encodings[0])?;
            let mut names = StringBuilder::new();
            for encoding in encodings.iter() {
                match encoding {
                    Some(0) => names.append_value("SQL_ASCII"),
                    Some(6) => names.append_value("UTF8"),
                    _ => names.append_null(),
                }
            }
            Ok(ColumnarValue::Array(Arc::new(names.finish())))
        }),
    )
}

/// `cohort_pg_data_type(arrow_type)`: the name `information_schema.columns.data_type` gives in
/// PostgreSQL (`bigint`, `timestamp with time zone`, `ARRAY`) for the Arrow type DataFusion's
/// information schema prints (`Int64`, `Timestamp(µs, "UTC")`), through the same mapping the
/// wire protocol uses for result columns, so a tool sees one type for a column either way.
pub(super) fn pg_data_type_udf() -> ScalarUDF {
    create_udf(
        PG_DATA_TYPE,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrow_types = ColumnarValue::values_to_arrays(args)?;
            let arrow_types = datafusion::common::cast::as_string_array(&arrow_types[0])?;
            let mut names = StringBuilder::new();
            for arrow_type in arrow_types.iter() {
                match arrow_type {
                    Some(text) => names.append_value(pg_data_type(text)),
                    None => names.append_null(),
                }
            }
            Ok(ColumnarValue::Array(Arc::new(names.finish())))
        }),
    )
}

/// PostgreSQL's information-schema name for the Arrow type printed as `arrow_type`; a text
/// that is no Arrow type is given back as it is.
pub(super) fn pg_data_type(arrow_type: &str) -> String {
    let Ok(parsed) = arrow_type.parse::<DataType>() else {
        return arrow_type.to_string();
    };
    let Ok(pg_type) = arrow_pg::datatypes::into_pg_type(&parsed) else {
        return "USER-DEFINED".to_string();
    };
    let name = pg_type.name();
    match name {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "time" => "time without time zone",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "varchar" => "character varying",
        "bpchar" => "character",
        "text" | "bytea" | "date" | "interval" | "numeric" | "json" | "jsonb" | "uuid"
        | "record" | "unknown" => name,
        array if array.starts_with('_') => "ARRAY",
        _ => "USER-DEFINED",
    }
    .to_string()
}

pub(super) fn version_udf() -> ScalarUDF {
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                VERSION.to_string(),
            ))))
        }),
    )
}

/// `to_regtype(name)`: the oid of a built-in type by name, NULL for any other (psycopg and
/// SQLAlchemy look up optional types such as `hstore` this way at connect).
pub(super) fn to_regtype_udf() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&names[0])?;
            let oids: Int32Array = names
                .iter()
                .map(|name| name.and_then(builtin_type_oid))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

pub(super) fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    Some(match name {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

/// `pg_get_serial_sequence(table, column)`: always NULL, Cohort has no sequences (SQLAlchemy
/// asks while reflecting identity columns).
pub(super) fn pg_get_serial_sequence_udf() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// `pg_collation_is_visible(oid)`, `pg_type_is_visible(oid)`: true, every collation and type
/// is a built-in one, in `pg_catalog`, which is always on the search path.
pub(super) fn always_visible_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

pub(super) fn json_build_object_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonBuildObject::default())
}

/// `json_build_object(key, value, ...)`: a JSON object as text, keys as text, values as JSON
/// numbers, booleans, strings or null.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes key/value pairs: an even number of arguments".into(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut objects = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(scalar_text(&key), scalar_json(&value));
            }
            objects.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(objects.finish())))
    }
}

fn scalar_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => text.clone(),
        other => other.to_string(),
    }
}

pub(super) fn scalar_json(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(v)) => Value::from(*v),
        ScalarValue::Int16(Some(v)) => Value::from(*v),
        ScalarValue::Int32(Some(v)) => Value::from(*v),
        ScalarValue::Int64(Some(v)) => Value::from(*v),
        ScalarValue::UInt8(Some(v)) => Value::from(*v),
        ScalarValue::UInt16(Some(v)) => Value::from(*v),
        ScalarValue::UInt32(Some(v)) => Value::from(*v),
        ScalarValue::UInt64(Some(v)) => Value::from(*v),
        ScalarValue::Float32(Some(v)) => Value::from(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => Value::from(*v),
        other => Value::String(scalar_text(other)),
    }
}

/// A LIKE pattern with escape character `escape` (none when empty) rewritten with backslash
/// escapes: `escape` before a character makes it literal, a backslash is itself literal.
pub(super) fn backslash_escaped(pattern: &str, escape: Option<char>) -> String {
    let mut translated = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(literal @ ('%' | '_' | '\\')) => {
                    translated.push('\\');
                    translated.push(literal);
                }
                Some(literal) => translated.push(literal),
                None => {}
            }
        } else if c == '\\' {
            translated.push_str("\\\\");
        } else {
            translated.push(c);
        }
    }
    translated
}

pub(super) fn like_pattern_udf() -> ScalarUDF {
    create_udf(
        LIKE_PATTERN,
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let patterns = datafusion::common::cast::as_string_array(&arrays[0])?;
            let escapes = datafusion::common::cast::as_string_array(&arrays[1])?;
            let mut translated = StringBuilder::new();
            for (pattern, escape) in patterns.iter().zip(escapes.iter()) {
                match (pattern, escape) {
                    (Some(pattern), Some(escape)) => {
                        let mut escape_chars = escape.chars();
                        let escape_char = escape_chars.next();
                        if escape_chars.next().is_some() {
                            return Err(DataFusionError::Execution(
                                "invalid escape string: it must be empty or one character".into(),
                            ));
                        }
                        translated.append_value(backslash_escaped(pattern, escape_char));
                    }
                    _ => translated.append_null(),
                }
            }
            Ok(ColumnarValue::Array(Arc::new(translated.finish())))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_resolve_by_name() {
        assert_eq!(builtin_type_oid("int4"), Some(23));
        assert_eq!(builtin_type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(builtin_type_oid("hstore"), None);
    }

    #[test]
    fn json_values_keep_their_types() {
        use serde_json::Value;
        assert_eq!(scalar_json(&ScalarValue::Int64(Some(3))), Value::from(3));
        assert_eq!(
            scalar_json(&ScalarValue::Boolean(Some(true))),
            Value::Bool(true)
        );
        assert_eq!(scalar_json(&ScalarValue::Utf8(None)), Value::Null);
        assert_eq!(
            scalar_json(&ScalarValue::Utf8(Some("a".into()))),
            Value::String("a".into())
        );
    }
}
