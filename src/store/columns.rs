//! How the enum columns are read and written: `users.user_type` as [`UserType`],
//! `ai_messages.role` as [`AiRole`], `ai_messages.finish_reason` as [`FinishReason`].
//!
//! Each is stored as its lower-case name (`TEXT` on SQLite, `VARCHAR` on PostgreSQL), so each
//! type takes on the text type of whichever backend reads it: it binds as text and decodes from
//! any column `&str` decodes from. A name that is not one of the type's values fails to decode
//! with an error naming the column's type (the schema's `CHECK` constraints keep such names
//! out); `finish_reason` has no such constraint and decodes any name, see [`FinishReason`].

use sqlx::{encode::IsNull, error::BoxDynError, Database, Decode, Encode, Type};

use crate::domain::{AiRole, FinishReason, UserType};

/// Implements `Type` on every backend for a type stored as text: it takes on the backend's
/// text type.
macro_rules! text_column_type {
    ($ty:ty) => {
        impl<DB: Database> Type<DB> for $ty
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }
    };
}

/// Implements `Type`, `Encode` and `Decode` on every backend for an enum whose values are
/// written as `as_str()` (a `&'static str`) and read with `parse(&str) -> Result<Self, _>`.
macro_rules! named_enum_column {
    ($ty:ty) => {
        text_column_type!($ty);

        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            &'q str: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&'q str as Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let raw = <&'r str as Decode<'r, DB>>::decode(value)?;
                <$ty>::parse(raw)
                    .map_err(|_| format!("{raw:?} is not a {}", stringify!($ty)).into())
            }
        }
    };
}

named_enum_column!(UserType);
named_enum_column!(AiRole);

text_column_type!(FinishReason);

impl<'q, DB: Database> Encode<'q, DB> for FinishReason
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        // A provider's own reason borrows from `self`, which the arguments may outlive.
        <String as Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for FinishReason
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(FinishReason::parse(<&'r str as Decode<'r, DB>>::decode(
            value,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::{str::FromStr, time::Duration};

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::store::sqlite::Sqlite;

    #[tokio::test]
    async fn enum_columns_read_back_as_written() {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        let sqlite = Sqlite::open(options, 1, Duration::from_secs(5))
            .await
            .unwrap();
        let mut conn = sqlite.acquire().await.unwrap();
        let conn = &mut *conn;
        sqlx::query("CREATE TABLE t (user_type TEXT NOT NULL, role TEXT NOT NULL, reason TEXT)")
            .execute(&mut *conn)
            .await
            .unwrap();
        let reasons = [
            Some(FinishReason::Interrupted),
            Some(FinishReason::parse("content_filter")),
            None,
        ];
        for reason in &reasons {
            sqlx::query("INSERT INTO t (user_type, role, reason) VALUES ($1, $2, $3)")
                .bind(UserType::Staff)
                .bind(AiRole::Assistant)
                .bind(reason)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let rows: Vec<(UserType, AiRole, Option<FinishReason>)> =
            sqlx::query_as("SELECT user_type, role, reason FROM t ORDER BY rowid")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let expected: Vec<_> = reasons
            .into_iter()
            .map(|reason| (UserType::Staff, AiRole::Assistant, reason))
            .collect();
        assert_eq!(rows, expected);
        let stored: Vec<String> = sqlx::query_scalar("SELECT user_type || ' ' || role FROM t")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(stored[0], "staff assistant", "stored by name");

        let unknown = sqlx::query_scalar::<_, UserType>("SELECT 'wizard'")
            .fetch_one(&mut *conn)
            .await
            .expect_err("not a user type");
        assert!(
            unknown.to_string().contains("\"wizard\" is not a UserType"),
            "{unknown}"
        );
    }
}
