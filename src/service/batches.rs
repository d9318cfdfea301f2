//! Lists whose items are expensive to build (a chat with its newest messages) are built a batch
//! at a time and handed over one by one, so a caller that stops early (a page full in bytes)
//! never has them all built at once.

use std::future::Future;

use super::ServiceError;

/// Items built per batch: few enough that building past the point where a caller stops costs
/// little, many enough to save round trips to the database.
pub const BATCH: usize = 10;

/// Builds `items` in order with `build`, in batches of 1, 2, 4, 8 and then [`BATCH`], and hands
/// each result to `take` until it answers false. Starting with one item means a page that fills
/// with its first item (a chat whose newest messages are long) builds only that one, and a batch
/// of [`BATCH`] is built only for a page whose first 15 items all fitted.
pub async fn take_in_batches<T, V, E: From<ServiceError>, F>(
    items: Vec<T>,
    mut build: impl FnMut(Vec<T>) -> F,
    mut take: impl FnMut(V) -> Result<bool, E>,
) -> Result<(), E>
where
    F: Future<Output = Result<Vec<V>, ServiceError>>,
{
    let mut items = items.into_iter().peekable();
    let mut size = 1;
    while items.peek().is_some() {
        let batch: Vec<T> = items.by_ref().take(size).collect();
        size = (size * 2).min(BATCH);
        for view in build(batch).await? {
            if !take(view)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_start_with_one_item_and_grow_to_the_batch_size() {
        let mut built = Vec::new();
        let mut taken = 0;
        take_in_batches::<_, _, ServiceError, _>(
            (0..40).collect::<Vec<i32>>(),
            |batch| {
                built.push(batch.len());
                async move { Ok(batch) }
            },
            |_| {
                taken += 1;
                Ok(taken < 30)
            },
        )
        .await
        .unwrap();
        assert_eq!(
            built,
            vec![1, 2, 4, 8, 10, 10],
            "none past the one that was refused"
        );
        assert_eq!(taken, 30);
    }
}
