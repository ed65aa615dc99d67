//! Stores without a disk, for tests: `MemStore` keeps the tables in memory (clones share them,
//! so a pool opened again over a clone sees what the last one committed), and `CrashingStore`
//! wraps one and crashes at a chosen commit: from then on nothing reaches the store, as if
//! the process had been killed just before that commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{KvStore, Op, Table};
use crate::error::{Error, Result};

/// Every record of every table, by (table, key).
type Records = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

/// Every table in memory; clones share them.
#[derive(Clone, Default)]
pub struct MemStore {
    tables: Arc<Mutex<Records>>,
}

impl MemStore {
    fn tables(&self) -> std::sync::MutexGuard<'_, Records> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvStore for MemStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables().get(&(table as u8, key.to_vec())).cloned())
    }

    fn scan(&self, table: Table, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = if from > prefix { from } else { prefix };
        let tables = self.tables();
        Ok(tables
            .range((table as u8, start.to_vec())..)
            .take_while(|((t, k), _)| *t == table as u8 && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let mut tables = self.tables();
        for op in ops {
            match op {
                Op::Put(t, k, v) => tables.insert((t as u8, k), v),
                Op::Delete(t, k) => tables.remove(&(t as u8, k)),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// A store that crashes at its `crash_at`-th commit (counting from 1): that commit and every
/// later one fail without reaching `inner`. `commits` counts the commits asked for, so a run
/// without a crash (`crash_at` 0) tells how many commit points a workload has.
pub struct CrashingStore {
    inner: MemStore,
    crash_at: u64,
    commits: Arc<AtomicU64>,
}

impl CrashingStore {
    pub fn new(inner: MemStore, crash_at: u64, commits: Arc<AtomicU64>) -> Self {
        CrashingStore { inner, crash_at, commits }
    }
}

impl KvStore for CrashingStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(table, key)
    }

    fn scan(&self, table: Table, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(table, prefix, from, limit)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_at != 0 && n >= self.crash_at {
            return Err(Error::Io(std::io::Error::other(format!("crashed at commit {}", self.crash_at))));
        }
        self.inner.commit(ops)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_stay_in_their_table_and_prefix() {
        let store = MemStore::default();
        let put = |t, k: &[u8]| Op::Put(t, k.to_vec(), k.to_vec());
        store
            .commit(vec![
                put(Table::Inodes, b"a1"),
                put(Table::Inodes, b"a2"),
                put(Table::Inodes, b"b1"),
                put(Table::Xattrs, b"a3"),
            ])
            .unwrap();
        let keys = |from: &[u8], limit| -> Vec<Vec<u8>> {
            store.scan(Table::Inodes, b"a", from, limit).unwrap().into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(b"", 10), [b"a1".to_vec(), b"a2".to_vec()]);
        assert_eq!(keys(b"a2", 10), [b"a2".to_vec()]);
        assert_eq!(keys(b"", 1), [b"a1".to_vec()]);
        store.commit(vec![Op::Delete(Table::Inodes, b"a1".to_vec())]).unwrap();
        assert_eq!(store.clone().get(Table::Inodes, b"a1").unwrap(), None);
    }

    #[test]
    fn a_crash_stops_every_later_commit() {
        let commits = Arc::new(AtomicU64::new(0));
        let store = CrashingStore::new(MemStore::default(), 2, commits.clone());
        store.commit(vec![Op::Put(Table::Counters, b"x".to_vec(), b"1".to_vec())]).unwrap();
        assert!(store.commit(vec![Op::Put(Table::Counters, b"y".to_vec(), b"1".to_vec())]).is_err());
        assert!(store.commit(vec![Op::Put(Table::Counters, b"z".to_vec(), b"1".to_vec())]).is_err());
        assert_eq!(store.get(Table::Counters, b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(Table::Counters, b"y").unwrap(), None);
        assert_eq!(commits.load(Ordering::SeqCst), 3);
    }
}
