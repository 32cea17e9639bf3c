//! Static Flight SQL metadata: the SqlInfo table drivers read at connect time (JDBC fails
//! without a full one), the XDBC type list, and the schemas of key-related calls.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedGroupBy, SqlSupportedSubqueries,
    SqlSupportedTransaction, SqlSupportedUnions, SupportedSqlGrammar, XdbcDataType,
};

const SQL_KEYWORDS: &[&str] = &[
    "ANALYZE", "ARRAY", "DESCRIBE", "EXPLAIN", "FILTER", "ILIKE", "INTERVAL", "LIMIT", "OFFSET",
    "QUALIFY", "SHOW", "UNNEST", "WINDOW",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "pi", "power", "radians", "random", "round", "signum",
    "sin", "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "position",
    "regexp_like",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
];
const SYSTEM_FUNCTIONS: &[&str] = &[
    "arrow_typeof",
    "current_catalog",
    "current_schema",
    "version",
];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_seconds",
    "to_unixtime",
];

fn bits<T: Into<i32>>(values: impl IntoIterator<Item = T>) -> i32 {
    values.into_iter().fold(0, |acc, v| acc | (1 << v.into()))
}

pub fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Cohort");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Unquoted identifiers are folded to lower case; quoted ones keep their case.
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // ASC puts nulls last and DESC first: nulls sort as the highest value.
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, SQL_KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(
        SqlInfo::SqlSupportsConvert,
        std::collections::HashMap::<i32, Vec<i32>>::new(),
    );
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits([
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits([
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    b.append(SqlInfo::SqlAnsi92SupportedLevel, bits([0i32, 1]));
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits([
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits([
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // 0 means "no fixed limit" for every maximum below.
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    // Forward-only result sets (SQL_RESULT_SET_TYPE_FORWARD_ONLY = 1).
    b.append(SqlInfo::SqlSupportedResultSetTypes, bits([1i32]));
    for concurrency in [
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
    ] {
        b.append(concurrency, 0i32);
    }
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build().expect("static SqlInfo table is valid")
}

fn xdbc_type(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quote: Option<&str>,
    numeric: bool,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: quote.map(str::to_string),
        literal_suffix: quote.map(str::to_string),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quote.is_some() && !numeric,
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: false,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

pub fn xdbc_type_info() -> XdbcTypeInfoData {
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc_type(
        "BOOLEAN",
        XdbcDataType::XdbcBit,
        Some(1),
        None,
        false,
    ));
    b.append(xdbc_type(
        "TINYINT",
        XdbcDataType::XdbcTinyint,
        Some(3),
        None,
        true,
    ));
    b.append(xdbc_type(
        "SMALLINT",
        XdbcDataType::XdbcSmallint,
        Some(5),
        None,
        true,
    ));
    b.append(xdbc_type(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(10),
        None,
        true,
    ));
    b.append(xdbc_type(
        "BIGINT",
        XdbcDataType::XdbcBigint,
        Some(19),
        None,
        true,
    ));
    b.append(xdbc_type(
        "REAL",
        XdbcDataType::XdbcFloat,
        Some(24),
        None,
        true,
    ));
    b.append(xdbc_type(
        "DOUBLE",
        XdbcDataType::XdbcDouble,
        Some(53),
        None,
        true,
    ));
    b.append(xdbc_type(
        "DECIMAL",
        XdbcDataType::XdbcDecimal,
        Some(38),
        None,
        true,
    ));
    b.append(xdbc_type(
        "VARCHAR",
        XdbcDataType::XdbcVarchar,
        None,
        Some("'"),
        false,
    ));
    b.append(xdbc_type(
        "BINARY",
        XdbcDataType::XdbcBinary,
        None,
        Some("'"),
        false,
    ));
    b.append(xdbc_type(
        "DATE",
        XdbcDataType::XdbcDate,
        Some(10),
        Some("'"),
        false,
    ));
    b.append(xdbc_type(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(32),
        Some("'"),
        false,
    ));
    b.build().expect("static XDBC type table is valid")
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// Schema of GetPrimaryKeys results (Flight SQL specification).
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("catalog_name", true),
        utf8("db_schema_name", true),
        utf8("table_name", false),
        utf8("column_name", false),
        utf8("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of GetImportedKeys, GetExportedKeys and GetCrossReference results.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}
