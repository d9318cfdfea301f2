//! The two migration sets, `migrations/sqlite/` and `migrations/postgres/`, define the same schema.
//!
//! Each set is applied to a fresh database of its own backend (a temporary SQLite file, and a
//! uniquely named PostgreSQL database), whatever `MRM_TEST_BACKEND` says; then both databases
//! are read back from their catalogues and compared: the same tables; per table the same columns
//! (name, nullability, type family), primary key, unique constraints, foreign keys, and indexes
//! (name, columns in order, uniqueness, partial or not).
//!
//! Types are compared through the families below, because each backend gets its proper types:
//!
//! | family  | SQLite                                  | PostgreSQL                          |
//! |---------|-----------------------------------------|-------------------------------------|
//! | integer | `INTEGER`                               | `BIGINT`, `INTEGER`, `SMALLINT`     |
//! | boolean | `INTEGER` with `CHECK (col IN (0, 1))`  | `BOOLEAN`                           |
//! | text    | `TEXT`                                  | `TEXT`, `VARCHAR(n)`, `CHAR(n)`     |
//! | text    | `TEXT` (timestamps as RFC 3339 text)    | `TIMESTAMPTZ`                       |
//!
//! Primary-key columns count as NOT NULL on both sides (PostgreSQL implies it; SQLite's catalogue
//! reports only what the column definition says). Unique constraints and primary keys are
//! compared by their columns, since each backend names their indexes its own way; indexes made
//! with `CREATE INDEX` are compared by name too. Column defaults and CHECK constraints are not
//! compared: the two dialects spell them differently (`FALSE` and `0`, casts).
//!
//! Full-text search is built differently by design: on SQLite an FTS5 virtual table
//! (`messages_fts`) with its shadow tables, on PostgreSQL the `messages.search` column
//! (`tsvector`) with its GIN index (`messages_search`). Those are left out of the comparison and
//! checked to exist, each on its own side.
//!
//! The migrations are read from the directories when the test runs, not from the copies built
//! into the server, so the test always sees the files as they are.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    str::FromStr,
};

use sqlx::{
    migrate::Migrator, sqlite::SqliteConnectOptions, ConnectOptions, Connection, PgConnection, Row,
};

use crate::helpers::TestDatabase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Integer,
    Boolean,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    family: Family,
    not_null: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Index {
    columns: Vec<String>,
    unique: bool,
    partial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    references: String,
    referenced_columns: Vec<String>,
    on_delete: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    primary_key: Vec<String>,
    unique: BTreeSet<Vec<String>>,
    foreign_keys: BTreeSet<ForeignKey>,
    /// Indexes made with `CREATE INDEX`, by name.
    indexes: BTreeMap<String, Index>,
}

type Schema = BTreeMap<String, Table>;

fn migrations(backend: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

async fn sqlite_schema(url: &str) -> Schema {
    let mut conn = SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .expect("open the SQLite file");
    Migrator::new(migrations("sqlite"))
        .await
        .expect("read migrations/sqlite")
        .run(&mut conn)
        .await
        .expect("apply migrations/sqlite");

    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' \
         AND name NOT LIKE 'messages\\_fts%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name, sql) in tables {
        let mut table = Table::default();
        // A boolean is an INTEGER restricted to 0 and 1.
        let compact: String = sql
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let rows = sqlx::query(r#"SELECT name, type, "notnull", pk FROM pragma_table_info($1)"#)
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut primary_key: Vec<(i64, String)> = Vec::new();
        for row in rows {
            let column: String = row.get("name");
            let declared: String = row.get("type");
            let pk: i64 = row.get("pk");
            let family = match declared.to_ascii_uppercase().as_str() {
                "INTEGER" if compact.contains(&format!("check({column}in(0,1))")) => {
                    Family::Boolean
                }
                "INTEGER" => Family::Integer,
                "TEXT" => Family::Text,
                other => panic!("{name}.{column}: SQLite type {other} has no family here"),
            };
            if pk > 0 {
                primary_key.push((pk, column.clone()));
            }
            let not_null = row.get::<i64, _>("notnull") == 1 || pk > 0;
            table.columns.insert(column, Column { family, not_null });
        }
        primary_key.sort();
        table.primary_key = primary_key.into_iter().map(|(_, c)| c).collect();

        let indexes =
            sqlx::query(r#"SELECT name, "unique", origin, partial FROM pragma_index_list($1)"#)
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for index in indexes {
            let index_name: String = index.get("name");
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&index_name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let origin: String = index.get("origin");
            match origin.as_str() {
                "pk" => {} // the primary key, compared above
                "u" => {
                    table.unique.insert(columns);
                }
                _ => {
                    table.indexes.insert(
                        index_name,
                        Index {
                            columns,
                            unique: index.get::<i64, _>("unique") == 1,
                            partial: index.get::<i64, _>("partial") == 1,
                        },
                    );
                }
            }
        }

        let keys = sqlx::query(
            r#"SELECT id, "table", "from", "to", on_delete FROM pragma_foreign_key_list($1)
               ORDER BY id, seq"#,
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for key in keys {
            let entry = by_id.entry(key.get("id")).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                references: key.get("table"),
                referenced_columns: Vec::new(),
                on_delete: key.get("on_delete"),
            });
            entry.columns.push(key.get("from"));
            entry.referenced_columns.push(
                key.get::<Option<String>, _>("to")
                    .unwrap_or_else(|| "id".into()),
            );
        }
        table.foreign_keys = by_id.into_values().collect();
        schema.insert(name, table);
    }
    conn.close().await.unwrap();
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    Migrator::new(migrations("postgres"))
        .await
        .expect("read migrations/postgres")
        .run(&mut conn)
        .await
        .expect("apply migrations/postgres");

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let columns = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS type, is_nullable::text AS nullable \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for row in columns {
            let column: String = row.get("name");
            let declared: String = row.get("type");
            let family = match declared.as_str() {
                "bigint" | "integer" | "smallint" => Family::Integer,
                "boolean" => Family::Boolean,
                "text" | "character varying" | "character" | "timestamp with time zone" => {
                    Family::Text
                }
                // The search column (see the module's comment).
                "tsvector" if name == "messages" && column == "search" => continue,
                other => panic!("{name}.{column}: PostgreSQL type {other} has no family here"),
            };
            let not_null = row.get::<String, _>("nullable") == "NO";
            table.columns.insert(column, Column { family, not_null });
        }

        let indexes = sqlx::query(
            "SELECT i.relname::text AS name, x.indisunique AS is_unique, \
                    x.indisprimary AS is_primary, x.indpred IS NOT NULL AS partial, \
                    EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) \
                        AS from_constraint, \
                    ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) \
                          FROM generate_series(1, x.indnatts) AS k ORDER BY k) AS columns \
             FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public' AND t.relname = $1",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for index in indexes {
            let columns: Vec<String> = index.get("columns");
            if index.get("is_primary") {
                table.primary_key = columns;
            } else if index.get("from_constraint") {
                table.unique.insert(columns);
            } else if index.get::<String, _>("name") == "messages_search" {
                // The search column's index (see the module's comment).
            } else {
                table.indexes.insert(
                    index.get("name"),
                    Index {
                        columns,
                        unique: index.get("is_unique"),
                        partial: index.get("partial"),
                    },
                );
            }
        }

        let keys = sqlx::query(
            "SELECT c.conname::text AS name, r.relname::text AS refs, c.confdeltype::text AS on_delete, \
                    a.attname::text AS from_column, ra.attname::text AS to_column \
             FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_class r ON r.oid = c.confrelid \
             CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(from_num, to_num, ord) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.from_num \
             JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.to_num \
             WHERE c.contype = 'f' AND n.nspname = 'public' AND t.relname = $1 \
             ORDER BY c.conname, k.ord",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut by_name: BTreeMap<String, ForeignKey> = BTreeMap::new();
        for key in keys {
            let on_delete = match key.get::<String, _>("on_delete").as_str() {
                "a" => "NO ACTION",
                "r" => "RESTRICT",
                "c" => "CASCADE",
                "n" => "SET NULL",
                "d" => "SET DEFAULT",
                other => panic!("unknown ON DELETE action {other:?}"),
            };
            let entry = by_name
                .entry(key.get("name"))
                .or_insert_with(|| ForeignKey {
                    columns: Vec::new(),
                    references: key.get("refs"),
                    referenced_columns: Vec::new(),
                    on_delete: on_delete.to_owned(),
                });
            entry.columns.push(key.get("from_column"));
            entry.referenced_columns.push(key.get("to_column"));
        }
        table.foreign_keys = by_name.into_values().collect();
        schema.insert(name, table);
    }
    conn.close().await.unwrap();
    schema
}

/// One line per difference, naming where it is.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    fn keyed<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        what: &str,
        sqlite: &BTreeMap<K, V>,
        postgres: &BTreeMap<K, V>,
        out: &mut Vec<String>,
    ) {
        for (key, value) in sqlite {
            match postgres.get(key) {
                None => out.push(format!("{what} {key:?}: only in SQLite ({value:?})")),
                Some(other) if other != value => out.push(format!(
                    "{what} {key:?}: SQLite {value:?}, PostgreSQL {other:?}"
                )),
                Some(_) => {}
            }
        }
        for (key, value) in postgres {
            if !sqlite.contains_key(key) {
                out.push(format!("{what} {key:?}: only in PostgreSQL ({value:?})"));
            }
        }
    }
    fn sets<T: Ord + std::fmt::Debug>(
        what: &str,
        sqlite: &BTreeSet<T>,
        postgres: &BTreeSet<T>,
        out: &mut Vec<String>,
    ) {
        for item in sqlite.difference(postgres) {
            out.push(format!("{what} {item:?}: only in SQLite"));
        }
        for item in postgres.difference(sqlite) {
            out.push(format!("{what} {item:?}: only in PostgreSQL"));
        }
    }

    let mut out = Vec::new();
    let names: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    for name in names {
        let (Some(s), Some(p)) = (sqlite.get(name), postgres.get(name)) else {
            let side = if sqlite.contains_key(name) {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            out.push(format!("table {name}: only in {side}"));
            continue;
        };
        keyed(&format!("{name}: column"), &s.columns, &p.columns, &mut out);
        if s.primary_key != p.primary_key {
            out.push(format!(
                "{name}: primary key SQLite {:?}, PostgreSQL {:?}",
                s.primary_key, p.primary_key
            ));
        }
        sets(
            &format!("{name}: unique constraint"),
            &s.unique,
            &p.unique,
            &mut out,
        );
        sets(
            &format!("{name}: foreign key"),
            &s.foreign_keys,
            &p.foreign_keys,
            &mut out,
        );
        keyed(&format!("{name}: index"), &s.indexes, &p.indexes, &mut out);
    }
    out
}

#[tokio::test]
async fn both_migration_sets_define_the_same_schema() {
    let sqlite_db = TestDatabase::of_backend("sqlite").await;
    let postgres_db = TestDatabase::of_backend("postgres").await;
    let sqlite = sqlite_schema(&sqlite_db.url).await;
    let postgres = postgres_schema(&postgres_db.url).await;

    // Each side's full-text search structures exist (they are compared no further).
    let mut conn = SqliteConnectOptions::from_str(&sqlite_db.url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let fts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_fts' AND sql LIKE '%fts5%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(fts, 1, "the FTS5 index on SQLite");
    let mut conn = PgConnection::connect(&postgres_db.url).await.unwrap();
    let gin: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'messages_search' \
         AND indexdef LIKE '%USING gin (search)%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(gin, 1, "the GIN index on PostgreSQL");

    // The catalogues were read: a comparison of two empty schemas would prove nothing.
    for table in ["users", "chats", "messages", "ai_messages"] {
        assert!(
            sqlite.get(table).is_some_and(|t| !t.columns.is_empty()),
            "{table} read from SQLite: {sqlite:#?}"
        );
    }
    let messages = &sqlite["messages"];
    assert_eq!(messages.primary_key, ["id"]);
    assert!(messages
        .unique
        .contains(&vec!["chat_id".to_owned(), "seq".to_owned()]));
    assert_eq!(
        messages.indexes["messages_chat_id"].columns,
        ["chat_id", "id"]
    );
    assert_eq!(sqlite["users"].columns["is_staff"].family, Family::Boolean);
    // Its chat, its sender, and the message it replies to.
    assert_eq!(messages.foreign_keys.len(), 3);

    let differences = differences(&sqlite, &postgres);
    assert!(
        differences.is_empty(),
        "migrations/sqlite and migrations/postgres differ:\n{}",
        differences.join("\n")
    );
}
