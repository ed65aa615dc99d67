//! Where standalone mode keeps its objects and events: an embedded transactional store
//! (`objects.redb` in the state dir). A reconcile pass commits all it decided in one
//! transaction, durable before anything acts on it. Secrets are sealed (XChaCha20-Poly1305)
//! with a key kept in `objects.key` (0600), so their bytes are never on disk in the clear.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::object::{Kind, Object, ObjectKey};
use crate::error::{Error, Result};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Keyed `object key \0 sequence`, so an object's events are one range, in order.
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const KEY_FILE: &str = "objects.key";
const NONCE_LEN: usize = 24;

/// An event as `kubectl describe` lists it: the same reason repeated counts up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub object: ObjectKey,
    /// The uid of the object it is about: a recreated object does not inherit events.
    pub uid: String,
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub message: String,
    /// Which component reports it (`persistentvolume-controller`, `kubelet`, ...).
    pub source: String,
    pub first_unix: i64,
    pub last_unix: i64,
    pub count: u32,
}

/// One change of a reconcile pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put(Box<Object>),
    Remove(ObjectKey),
    Event(Event),
}

pub struct Store {
    db: redb::Database,
    cipher: XChaCha20Poly1305,
}

impl Store {
    pub fn open(state_dir: &Path) -> Result<Store> {
        let db = redb::Database::create(state_dir.join("objects.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(COUNTERS)?;
        txn.commit()?;
        let cipher = XChaCha20Poly1305::new(&secret_key(state_dir)?.into());
        Ok(Store { db, cipher })
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Object>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let value = table.get(key.encode().as_str())?;
        value.map(|v| self.decode(key.kind, v.value())).transpose()
    }

    /// Every object of `kind`, by namespace and name.
    pub fn list(&self, kind: Kind) -> Result<Vec<Object>> {
        let prefix = format!("{}/", kind.name());
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let mut found = Vec::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            found.push(self.decode(kind, v.value())?);
        }
        Ok(found)
    }

    /// The events about `key` (of its current incarnation `uid`), oldest first.
    pub fn events(&self, key: &ObjectKey, uid: &str) -> Result<Vec<Event>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let prefix = format!("{}\0", key.encode());
        let mut found = Vec::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            let event: Event = serde_json::from_slice(v.value())?;
            if event.uid == uid {
                found.push(event);
            }
        }
        found.sort_by_key(|e| e.last_unix);
        Ok(found)
    }

    /// Commits `writes` in one durable transaction. Objects get the next resourceVersion;
    /// an event equal to one the object has (reason and message) counts that one up instead.
    pub fn commit(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut counters = txn.open_table(COUNTERS)?;
            let next = |counters: &mut redb::Table<&str, u64>, name: &str| -> Result<u64> {
                let n = counters.get(name)?.map_or(0, |v| v.value()) + 1;
                counters.insert(name, n)?;
                Ok(n)
            };
            for write in writes {
                match write {
                    Write::Put(object) => {
                        let mut object = *object;
                        object.meta_mut().resource_version = Some(next(&mut counters, "resourceVersion")?.to_string());
                        let bytes = self.encode(&object)?;
                        objects.insert(object.key().encode().as_str(), bytes.as_slice())?;
                    }
                    Write::Remove(key) => {
                        objects.remove(key.encode().as_str())?;
                        let prefix = format!("{}\0", key.encode());
                        let stale: Vec<String> = events
                            .range(prefix.as_str()..)?
                            .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()))
                            .take_while(|k| k.starts_with(&prefix))
                            .collect();
                        for k in stale {
                            events.remove(k.as_str())?;
                        }
                    }
                    Write::Event(event) => {
                        let prefix = format!("{}\0", event.object.encode());
                        let same = events
                            .range(prefix.as_str()..)?
                            .map_while(|e| e.ok())
                            .take_while(|(k, _)| k.value().starts_with(&prefix))
                            .filter_map(|(k, v)| {
                                Some((k.value().to_string(), serde_json::from_slice::<Event>(v.value()).ok()?))
                            })
                            .find(|(_, old)| {
                                old.uid == event.uid && old.reason == event.reason && old.message == event.message
                            });
                        let repeated = same.map(|(k, mut old)| {
                            old.count += 1;
                            old.last_unix = event.last_unix;
                            (k, old)
                        });
                        let (k, event) = match repeated {
                            Some(found) => found,
                            None => (format!("{prefix}{:020}", next(&mut counters, "event")?), event),
                        };
                        events.insert(k.as_str(), serde_json::to_vec(&event)?.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn encode(&self, object: &Object) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&object.to_json())?;
        if object.kind() != Kind::Secret {
            return Ok(json);
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("no random bytes: {e}")))?;
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), json.as_slice())
            .map_err(|_| Error::Internal("cannot seal a secret".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn decode(&self, kind: Kind, bytes: &[u8]) -> Result<Object> {
        let opened;
        let json = if kind == Kind::Secret {
            let unsealed = || {
                let (nonce, sealed) = bytes.split_at_checked(NONCE_LEN)?;
                self.cipher.decrypt(&XNonce::try_from(nonce).ok()?, sealed).ok()
            };
            opened = unsealed().ok_or_else(|| {
                Error::Store(format!("a secret does not open with {KEY_FILE}: the key file was replaced"))
            })?;
            &opened[..]
        } else {
            bytes
        };
        Object::from_json(serde_json::from_slice(json)?).map_err(Error::Store)
    }
}

/// The key that seals secrets: read from the state dir, or made there (0600) the first time.
fn secret_key(state_dir: &Path) -> Result<[u8; 32]> {
    let path = state_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.try_into().map_err(|_| Error::Store(format!("{} is not a 32-byte key", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Store(format!("reading {}: {e}", path.display()))),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::Internal(format!("no random bytes: {e}")))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| Error::Store(format!("writing {}: {e}", path.display())))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn secret(name: &str, value: &str) -> Object {
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData: {{password: {value}}}\n"
        );
        super::super::object::parse_manifests(&text, "s.yaml").unwrap().remove(0)
    }

    #[test]
    fn secrets_are_sealed_on_disk_and_open_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let object = secret("db", "hunter2-very-secret");
        {
            let store = Store::open(dir.path()).unwrap();
            store.commit(vec![Write::Put(Box::new(object.clone()))]).unwrap();
        }
        let key_mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let raw = std::fs::read(dir.path().join("objects.redb")).unwrap();
        assert!(!raw.windows(19).any(|w| w == b"hunter2-very-secret"), "secret bytes on disk in the clear");
        let store = Store::open(dir.path()).unwrap();
        let back = store.get(&object.key()).unwrap().unwrap();
        assert_eq!(back.kind(), Kind::Secret);
        assert_eq!(back.to_json()["stringData"]["password"], "hunter2-very-secret");
        assert_eq!(back.meta().resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn repeated_events_count_up_and_go_with_their_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = ObjectKey::new(Kind::PersistentVolumeClaim, "default", "c");
        let event = |reason: &str, at: i64| Event {
            object: key.clone(),
            uid: "u1".into(),
            kind: "Normal".into(),
            reason: reason.into(),
            message: "m".into(),
            source: "test".into(),
            first_unix: at,
            last_unix: at,
            count: 1,
        };
        store
            .commit(vec![Write::Event(event("A", 1)), Write::Event(event("A", 2)), Write::Event(event("B", 3))])
            .unwrap();
        let events = store.events(&key, "u1").unwrap();
        assert_eq!(events.iter().map(|e| (e.reason.as_str(), e.count)).collect::<Vec<_>>(), [("A", 2), ("B", 1)]);
        assert!(store.events(&key, "u2").unwrap().is_empty());
        store.commit(vec![Write::Remove(key.clone())]).unwrap();
        assert!(store.events(&key, "u1").unwrap().is_empty());
    }
}
