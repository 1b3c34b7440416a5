//! A request's private view of a batch transaction: reads fall through to the
//! transaction, writes stay in the overlay until the request succeeds. A request
//! that fails inside a group-commit batch thus leaves no trace, while the requests
//! around it commit.

use std::collections::BTreeMap;

use super::{StoreError, Transaction};

#[derive(Debug)]
pub struct Overlay<'t, T> {
    txn: &'t mut T,
    /// `None` marks a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t, T: Transaction> Overlay<'t, T> {
    pub fn new(txn: &'t mut T) -> Self {
        Self {
            txn,
            writes: BTreeMap::new(),
        }
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.txn.get(key).await,
        }
    }

    pub async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.txn.get_for_update(key).await,
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Hands the writes to the transaction: the request succeeded.
    pub async fn apply(self) -> Result<(), StoreError> {
        for (key, value) in self.writes {
            match value {
                Some(value) => self.txn.put(key, value).await?,
                None => self.txn.delete(key).await?,
            }
        }
        Ok(())
    }
}
