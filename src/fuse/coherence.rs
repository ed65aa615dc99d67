//! Keeps every mount of one volume coherent. The kernel may cache names and attributes for a
//! long time because volfs is the only writer of a volume's metadata; when one mount changes
//! something, the other mounts of the same volume are told to drop what they cached.
//!
//! Notifications go out from one thread and the changing request waits for them (boundedly)
//! before it replies, so a change is visible everywhere once its syscall returns. The bound
//! matters: delivering an invalidation takes a directory lock in the other mount, whose
//! holder may itself be waiting for a worker of ours.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::session::Connection;
use super::wire::{abi, reply};
use crate::meta::{Ino, VolumeId};

/// Something a mount changed that other mounts may have cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A name in a directory appeared, disappeared or points elsewhere.
    Entry(Ino, Vec<u8>),
    /// An inode's attributes changed.
    Attr(Ino),
    /// An inode's data changed too (daemon-served I/O leaves copies in each mount's cache).
    Data(Ino),
}

struct Peer {
    session: u64,
    root: Ino,
    connection: Arc<Connection>,
}

struct Job {
    targets: Vec<(Ino, Arc<Connection>)>,
    changes: Vec<Change>,
    done: SyncSender<()>,
}

/// How long a request waits for its notifications before replying anyway.
const WAIT: Duration = Duration::from_secs(1);

pub struct Coherence {
    peers: RwLock<HashMap<VolumeId, Vec<Peer>>>,
    queue: Mutex<Sender<Job>>,
}

impl Coherence {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("volfs-coherence".into())
            .spawn(move || deliver(rx))
            .expect("spawning the coherence thread");
        Coherence { peers: RwLock::new(HashMap::new()), queue: Mutex::new(tx) }
    }

    pub fn register(&self, volume: VolumeId, session: u64, root: Ino, connection: Arc<Connection>) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.entry(volume).or_default().push(Peer { session, root, connection });
    }

    pub fn unregister(&self, volume: VolumeId, session: u64) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = peers.get_mut(&volume) {
            list.retain(|p| p.session != session);
        }
    }

    /// Whether `volume` has more than one mount.
    pub fn is_shared(&self, volume: VolumeId) -> bool {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.get(&volume).is_some_and(|list| list.len() > 1)
    }

    /// Tells every mount of `volume` but session `from` (0: every one) about `changes` (built
    /// only when there is a mount to tell).
    pub fn publish(&self, volume: VolumeId, from: u64, changes: impl FnOnce() -> Vec<Change>) {
        let targets: Vec<(Ino, Arc<Connection>)> = {
            let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
            match peers.get(&volume) {
                Some(list) => {
                    list.iter().filter(|p| p.session != from).map(|p| (p.root, p.connection.clone())).collect()
                }
                None => return,
            }
        };
        if targets.is_empty() {
            return;
        }
        let (done, wait) = mpsc::sync_channel(1);
        let job = Job { targets, changes: changes(), done };
        if self.queue.lock().unwrap_or_else(|p| p.into_inner()).send(job).is_ok() {
            let _ = wait.recv_timeout(WAIT);
        }
    }
}

impl Default for Coherence {
    fn default() -> Self {
        Self::new()
    }
}

fn deliver(rx: Receiver<Job>) {
    for job in rx {
        for (root, connection) in &job.targets {
            let kernel = |ino: Ino| if ino == *root { abi::ROOT_ID } else { ino.0 };
            for change in &job.changes {
                let message = match change {
                    Change::Entry(parent, name) => reply::notify_inval_entry(kernel(*parent), name, 0),
                    // A negative offset drops attributes only.
                    Change::Attr(ino) => reply::notify_inval_inode(kernel(*ino), -1, 0),
                    Change::Data(ino) => reply::notify_inval_inode(kernel(*ino), 0, 0),
                };
                if let Err(e) = connection.send(&[IoSlice::new(&message)]) {
                    tracing::debug!(?change, error = %e, "invalidation not delivered");
                }
            }
        }
        let _ = job.done.send(());
    }
}
