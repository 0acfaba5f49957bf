//! What differs between the queue's SQL databases, and nothing else.
//!
//! The queue's logic (`sql.rs`) is written once, over any database that
//! implements [`Dialect`]. A dialect is small on purpose: the database's
//! clock as an SQL expression, the few fragments where the two databases
//! keep the queue's guarantees by different means (how a claim avoids
//! racing another: SQLite serialises writers, PostgreSQL locks rows with
//! `SKIP LOCKED` and has a unique index on processing keys), a spelling or
//! two, and the handful of calls into sqlx that need the concrete database
//! type (binding a value, running a statement, a transaction).
//!
//! Statements are built with [`Sql`], which only takes `&'static str` text
//! (no value can be spliced into SQL) and binds every value with
//! [`Sql::bind`]: which parameters a statement has is decided by the code
//! that builds it, and placeholders (`?` or `$n`) are sqlx's business.
//!
//! Why not sqlx's `any` driver: it would need every value and column to go
//! through its reduced type mapping and its own connect options (SQLite's
//! WAL and `synchronous = FULL`, PostgreSQL's statement timeouts and
//! keepalives would become pragmas and URL parameters applied after the
//! fact), and would still not hide the SQL differences above. A trait with
//! the two concrete implementations keeps each driver's own options and
//! types, and the compiler checks both.

use futures::future::BoxFuture;
use sqlx::{ColumnIndex, Decode, Pool, QueryBuilder, Row, Type};

/// A value bound to a statement parameter. The queue stores text and
/// integers only; each has the same SQL type on both databases
/// (`TEXT`, `BIGINT`/`INTEGER` as i64, and `INTEGER` as i32).
#[derive(Debug, Clone)]
pub enum Param {
    Int(i64),
    /// For `INTEGER` (32-bit on PostgreSQL) columns.
    Int32(i32),
    Text(String),
    OptionalInt(Option<i64>),
    OptionalText(Option<String>),
    /// For `BLOB` / `BYTEA` columns (uploaded files' pieces).
    Bytes(Vec<u8>),
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl From<i32> for Param {
    fn from(value: i32) -> Self {
        Param::Int32(value)
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(value)
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(value.to_string())
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Param::OptionalInt(value)
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Param::OptionalText(value)
    }
}

impl From<Option<&str>> for Param {
    fn from(value: Option<&str>) -> Self {
        Param::OptionalText(value.map(str::to_string))
    }
}

/// A statement under construction: static SQL text and bound values.
///
/// Text may use two tokens, replaced as it is pushed: `NOW_MS`, the
/// database's clock in Unix milliseconds ([`Dialect::NOW_MS`]; leases are
/// granted, renewed, compared and settled on this one clock, never on a
/// timestamp a process computed, whose clock may be skewed), and
/// `LEASE_EXPIRED_ERROR` ([`super::LEASE_EXPIRED_ERROR`]).
pub struct Sql<D: Dialect> {
    builder: QueryBuilder<D>,
}

impl<D: Dialect> Sql<D> {
    pub fn new(text: &'static str) -> Self {
        let mut sql = Sql {
            builder: QueryBuilder::new(""),
        };
        sql.push(text);
        sql
    }

    /// Appends SQL text; only static text, so no value is ever spliced in.
    pub fn push(&mut self, text: &'static str) -> &mut Self {
        if text.contains("NOW_MS") || text.contains("LEASE_EXPIRED_ERROR") {
            self.builder.push(
                text.replace("LEASE_EXPIRED_ERROR", super::LEASE_EXPIRED_ERROR)
                    .replace("NOW_MS", D::NOW_MS),
            );
        } else {
            self.builder.push(text);
        }
        self
    }

    /// Appends a placeholder and binds `value` to it.
    pub fn bind(&mut self, value: impl Into<Param>) -> &mut Self {
        D::bind(&mut self.builder, value.into());
        self
    }

    /// Appends `(?, ?, …)` binding each of `values`; callers make sure the
    /// list is not empty (`IN ()` is not SQL).
    pub fn bind_list<T: Into<Param>>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")")
    }

    /// The builder, for a dialect's calls into sqlx.
    pub fn builder(&mut self) -> &mut QueryBuilder<D> {
        &mut self.builder
    }

    /// The SQL text as it stands (for tests).
    pub fn text(&self) -> String {
        self.builder.sql().as_str().to_owned()
    }
}

/// Reading a queue row's columns, whatever the database. Every column the
/// queue reads is text or an integer.
pub trait QueueRow: Send + Sync + 'static {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn optional_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    /// An `INTEGER` column that PostgreSQL stores in 32 bits.
    fn int32(&self, column: &str) -> Result<i32, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
}

impl<R> QueueRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i32: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
    fn optional_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
    fn int32(&self, column: &str) -> Result<i32, sqlx::Error> {
        self.try_get(column)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }
}

/// A database the queue runs on: the SQL that differs, and the calls into
/// sqlx that need the concrete database type.
///
/// Implemented by [`sqlx::Sqlite`] (`sqlite.rs`) and [`sqlx::Postgres`]
/// (`postgres.rs`); the queue itself is [`super::SqlQueue`].
pub trait Dialect: sqlx::Database<Row: QueueRow> {
    /// The database's clock in Unix milliseconds, one instant for the
    /// whole statement.
    const NOW_MS: &'static str;
    /// The column that orders rows created in the same millisecond in
    /// insertion order.
    const INSERTION_ORDER: &'static str;
    /// The larger of two integers (`MAX(a, b)` / `GREATEST(a, b)`).
    const GREATEST: &'static str;

    /// Which rows of `jobs j` a claim may take, `NOW_MS` being the
    /// database's clock.
    const CLAIMABLE: &'static str;
    /// When another row `o` of `jobs` holds the concurrency key of the
    /// candidate `j` (so `j` must wait).
    const KEY_HELD_BY: &'static str;
    /// Appended to the claim's row choice: how it keeps concurrent claims
    /// from choosing the same row.
    const CLAIM_LOCK: &'static str;
    /// Expired leases are settled at most this often per process (`None`:
    /// before every claim).
    const SWEEP_INTERVAL_MS: Option<i64>;

    /// Binds `value` to a new placeholder of `query`.
    fn bind(query: &mut QueryBuilder<Self>, value: Param);
    /// Runs `query`; how many rows it changed.
    fn execute(pool: &Pool<Self>, query: Sql<Self>) -> BoxFuture<'_, Result<u64, sqlx::Error>>;
    /// Runs `queries` in one transaction; how many rows each changed.
    fn execute_in_transaction(
        pool: &Pool<Self>,
        queries: Vec<Sql<Self>>,
    ) -> BoxFuture<'_, Result<Vec<u64>, sqlx::Error>>;
    fn fetch_optional(
        pool: &Pool<Self>,
        query: Sql<Self>,
    ) -> BoxFuture<'_, Result<Option<Self::Row>, sqlx::Error>>;
    fn fetch_all(
        pool: &Pool<Self>,
        query: Sql<Self>,
    ) -> BoxFuture<'_, Result<Vec<Self::Row>, sqlx::Error>>;
}

/// The [`Dialect`] calls into sqlx. Their text is the same for every
/// database, but each needs the concrete types (which values a database
/// can bind, what its query result says), so each dialect expands this in
/// its `impl Dialect`.
macro_rules! sqlx_calls {
    () => {
        fn bind(query: &mut sqlx::QueryBuilder<Self>, value: $crate::queue::dialect::Param) {
            use $crate::queue::dialect::Param;
            match value {
                Param::Int(value) => query.push_bind(value),
                Param::Int32(value) => query.push_bind(value),
                Param::Text(value) => query.push_bind(value),
                Param::OptionalInt(value) => query.push_bind(value),
                Param::OptionalText(value) => query.push_bind(value),
                Param::Bytes(value) => query.push_bind(value),
            };
        }

        fn execute(
            pool: &sqlx::Pool<Self>,
            mut query: $crate::queue::dialect::Sql<Self>,
        ) -> futures::future::BoxFuture<'_, Result<u64, sqlx::Error>> {
            Box::pin(async move {
                let done = query.builder().build().execute(pool).await?;
                Ok(done.rows_affected())
            })
        }

        fn execute_in_transaction(
            pool: &sqlx::Pool<Self>,
            queries: Vec<$crate::queue::dialect::Sql<Self>>,
        ) -> futures::future::BoxFuture<'_, Result<Vec<u64>, sqlx::Error>> {
            Box::pin(async move {
                let mut transaction = pool.begin().await?;
                let mut changed = Vec::with_capacity(queries.len());
                for mut query in queries {
                    let done = query.builder().build().execute(&mut *transaction).await?;
                    changed.push(done.rows_affected());
                }
                transaction.commit().await?;
                Ok(changed)
            })
        }

        fn fetch_optional(
            pool: &sqlx::Pool<Self>,
            mut query: $crate::queue::dialect::Sql<Self>,
        ) -> futures::future::BoxFuture<'_, Result<Option<Self::Row>, sqlx::Error>> {
            Box::pin(async move { query.builder().build().fetch_optional(pool).await })
        }

        fn fetch_all(
            pool: &sqlx::Pool<Self>,
            mut query: $crate::queue::dialect::Sql<Self>,
        ) -> futures::future::BoxFuture<'_, Result<Vec<Self::Row>, sqlx::Error>> {
            Box::pin(async move { query.builder().build().fetch_all(pool).await })
        }
    };
}
pub(super) use sqlx_calls;
