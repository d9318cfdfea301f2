//! Lists whose items are expensive to build (a chat with its newest messages) are built a batch
//! at a time and handed over one by one, so a caller that stops early (a page full in bytes)
//! never has them all built at once.

use std::future::Future;

use super::ServiceError;

/// Items built per batch: few enough that building past the point where a caller stops costs
/// little, many enough to save round trips to the database.
pub const BATCH: usize = 10;

/// Builds `items` in order, [`BATCH`] at a time with `build`, and hands each result to `take`
/// until it answers false.
pub async fn take_in_batches<T, V, E: From<ServiceError>, F>(
    items: Vec<T>,
    mut build: impl FnMut(Vec<T>) -> F,
    mut take: impl FnMut(V) -> Result<bool, E>,
) -> Result<(), E>
where
    F: Future<Output = Result<Vec<V>, ServiceError>>,
{
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<T> = items.by_ref().take(BATCH).collect();
        for view in build(batch).await? {
            if !take(view)? {
                return Ok(());
            }
        }
    }
    Ok(())
}
