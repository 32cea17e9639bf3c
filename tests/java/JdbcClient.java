// What a JDBC tool (DBeaver, Tableau's driver, Metabase) does on connect, with the standard
// PostgreSQL JDBC driver: read DatabaseMetaData, then run a server-side prepared statement.
// Prints one "kind<TAB>value" line per fact; the Python test compares them against Flight SQL
// and against a real PostgreSQL 15 server. Exits non-zero on any SQLException.
//
// Usage: java -cp postgresql.jar:. JdbcClient JDBC_URL USER [PASSWORD]
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.sql.Timestamp;
import java.util.Properties;

public class JdbcClient {
    private static void print(String kind, Object value) {
        System.out.println(kind + "\t" + value);
    }

    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        if (args.length > 2) {
            properties.setProperty("password", args[2]);
        }
        // Server-side prepared statements from the first execution, binary results after that.
        properties.setProperty("prepareThreshold", "1");
        try (Connection connection = DriverManager.getConnection(args[0], properties)) {
            DatabaseMetaData meta = connection.getMetaData();
            print("product", meta.getDatabaseProductName());
            print("major_version", meta.getDatabaseMajorVersion());
            try (ResultSet schemas = meta.getSchemas()) {
                while (schemas.next()) {
                    print("schema", schemas.getString("TABLE_SCHEM"));
                }
            }
            try (ResultSet tables = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (tables.next()) {
                    print("table", tables.getString("TABLE_NAME") + " " + tables.getString("TABLE_TYPE"));
                }
            }
            for (String table : new String[] {"events", "profiles"}) {
                try (ResultSet columns = meta.getColumns(null, "public", table, "%")) {
                    while (columns.next()) {
                        print("column", table + "." + columns.getString("COLUMN_NAME")
                                + " " + columns.getString("TYPE_NAME")
                                + " " + columns.getInt("DATA_TYPE")
                                + " nullable=" + columns.getString("IS_NULLABLE")
                                + " position=" + columns.getInt("ORDINAL_POSITION"));
                    }
                }
            }
            int typeCount = 0;
            boolean hasInt8 = false;
            try (ResultSet types = meta.getTypeInfo()) {
                while (types.next()) {
                    typeCount++;
                    hasInt8 |= "int8".equals(types.getString("TYPE_NAME"));
                }
            }
            print("type_info", typeCount > 0 && hasInt8);

            try (PreparedStatement counted = connection.prepareStatement(
                    "SELECT count(*) FROM events WHERE event = ? AND user_id > ?")) {
                // Three runs: the driver switches to its named server-side statement after the first.
                for (int run = 0; run < 3; run++) {
                    counted.setString(1, "page_view");
                    counted.setLong(2, 10L * run);
                    try (ResultSet result = counted.executeQuery()) {
                        result.next();
                        print("prepared_count", (10L * run) + " " + result.getLong(1));
                    }
                }
            }
            try (PreparedStatement stamped = connection.prepareStatement(
                    "SELECT count(*) FROM events WHERE ts >= ?")) {
                for (int run = 0; run < 2; run++) {
                    stamped.setTimestamp(1, Timestamp.valueOf("2026-01-01 00:00:00"));
                    try (ResultSet result = stamped.executeQuery()) {
                        result.next();
                        print("since_2026", result.getLong(1));
                    }
                }
            }
            try (Statement statement = connection.createStatement();
                 ResultSet result = statement.executeQuery(
                         "SELECT user_id, country, ltv, signup_at FROM profiles ORDER BY user_id LIMIT 3")) {
                while (result.next()) {
                    print("profile", result.getLong(1) + " " + result.getString(2) + " "
                            + result.getDouble(3) + " " + (result.getTimestamp(4) != null));
                }
            }
        }
    }
}
