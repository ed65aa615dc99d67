//! fsck: checks every invariant of a pool — the directory tree of each volume and snapshot,
//! link counts, entry counts and readdir cookies, usage counters (inodes, also against the
//! volume's limit, and bytes against what the data files hold), that every layer holding records is read by some view and every
//! file's data belongs to a layer its view reads, and that data files (with the shared ones
//! under them) and inodes match — and, when asked, reclaims what interrupted operations left
//! behind.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::meta::{Ino, Inode, Kind};
use crate::pool::Pool;

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub volumes: usize,
    pub inodes: usize,
    pub data_files: usize,
    /// Broken invariants. A pool with any is damaged.
    pub problems: Vec<String>,
    /// Leftovers of interrupted operations (unlinked-but-open inodes, data files without an
    /// inode): harmless, and reclaimed by `--repair` or by the next daemon start.
    pub reclaimable: Vec<String>,
    pub repaired: bool,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the pool; with `repair`, also reclaims leftovers. Holds the write lock throughout,
/// so the pool may be served while it runs; `offline` says no daemon serves it.
pub fn check(pool: &Pool, repair: bool, offline: bool) -> Result<FsckReport> {
    let core = pool.core();
    let meta = core.meta();
    // No data changes meanwhile either: a copy in progress would look like a stray data file.
    let (_cutting, _w) = (core.cutting(), core.lock());
    let mut report = FsckReport::default();
    let inodes: HashMap<Ino, Inode> = meta.all_inodes()?.into_iter().collect();
    report.inodes = inodes.len();
    let orphans: HashSet<Ino> = meta.orphans()?.into_iter().collect();
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut reachable: HashSet<Ino> = HashSet::new();
    let volumes = meta.volumes()?;
    report.volumes = volumes.len();
    let views = meta.views();
    // Usage in bytes is exact in a running daemon and in the records of a cleanly closed pool;
    // after an unclean stop the next start recounts it.
    let bytes_known = !offline || pool.closed_cleanly();
    for volume in &volumes {
        let mut count = 0u64;
        let Some(root) = inodes.get(&volume.root) else {
            report.problems.push(format!("volume {}: root inode {} is missing", volume.name, volume.root.0));
            continue;
        };
        if root.parent != volume.root {
            report.problems.push(format!("volume {}: root inode does not point to itself", volume.name));
        }
        reachable.insert(volume.root);
        count += 1;
        let mut stack = vec![volume.root];
        while let Some(dir_ino) = stack.pop() {
            let dir = &inodes[&dir_ino];
            let entries = meta.all_entries(dir_ino)?;
            let mut subdirs = 0u32;
            for (name, entry) in &entries {
                let path = format!(
                    "volume {}: entry {:?} in directory {}",
                    volume.name,
                    String::from_utf8_lossy(name),
                    dir_ino.0
                );
                if entry.cookie < 3 || entry.cookie >= dir.next_cookie {
                    report.problems.push(format!("{path}: cookie {} outside 3..{}", entry.cookie, dir.next_cookie));
                }
                let Some(child) = inodes.get(&entry.ino) else {
                    report.problems.push(format!("{path}: points to missing inode {}", entry.ino.0));
                    continue;
                };
                if child.kind != entry.kind {
                    report.problems.push(format!("{path}: kind {:?} but inode is {:?}", entry.kind, child.kind));
                }
                if child.volume != volume.id {
                    report.problems.push(format!("{path}: inode {} belongs to another volume", entry.ino.0));
                }
                *links.entry(entry.ino).or_default() += 1;
                if child.kind == Kind::Dir {
                    subdirs += 1;
                    if child.parent != dir_ino {
                        report.problems.push(format!("{path}: directory's parent is {}", child.parent.0));
                    }
                    if !reachable.insert(entry.ino) {
                        report.problems.push(format!("{path}: directory reachable twice"));
                        continue;
                    }
                    count += 1;
                    stack.push(entry.ino);
                } else if reachable.insert(entry.ino) {
                    count += 1;
                }
            }
            if dir.entries != entries.len() as u64 {
                report.problems.push(format!(
                    "volume {}: directory {} counts {} entries but holds {}",
                    volume.name,
                    dir_ino.0,
                    dir.entries,
                    entries.len()
                ));
            }
            if dir.nlink != 2 + subdirs {
                report.problems.push(format!(
                    "volume {}: directory {} has nlink {} but {} subdirectories",
                    volume.name, dir_ino.0, dir.nlink, subdirs
                ));
            }
        }
        let orphan_count = orphans.iter().filter(|o| inodes.get(o).is_some_and(|i| i.volume == volume.id)).count();
        let usage = meta.usage(volume.id)?;
        if bytes_known && !core.has_open_files(volume.id)? {
            let mut held = 0u64;
            for (ino, inode) in inodes.iter().filter(|(_, i)| i.volume == volume.id) {
                if let Some(id) = inode.data.filter(|_| reachable.contains(ino) || orphans.contains(ino)) {
                    held += core.file_usage(id, &inode.under)?;
                }
            }
            let counted = core.space_of(volume.id)?.used;
            if counted != held {
                report
                    .problems
                    .push(format!("volume {}: usage counts {counted} bytes but its files hold {held}", volume.name));
            }
        }
        if usage.inodes != count + orphan_count as u64 {
            report.problems.push(format!(
                "volume {}: usage counts {} inodes but {} exist",
                volume.name,
                usage.inodes,
                count + orphan_count as u64
            ));
        }
        if let Some(limit) = volume.inode_limit().filter(|&limit| usage.inodes > limit) {
            report
                .problems
                .push(format!("volume {}: holds {} inodes, more than its limit of {limit}", volume.name, usage.inodes));
        }
    }
    for (ino, inode) in &inodes {
        if inode.kind != Kind::Dir && reachable.contains(ino) {
            let found = links.get(ino).copied().unwrap_or(0);
            if inode.nlink != found {
                report.problems.push(format!("inode {}: nlink {} but {} names", ino.0, inode.nlink, found));
            }
        }
        if !reachable.contains(ino) {
            if orphans.contains(ino) && inode.nlink == 0 {
                // A snapshot keeps a file that was open, unlinked, at its cut; it goes with it.
                if !views.get(&ino.view()).is_some_and(|v| v.read_only) {
                    report.reclaimable.push(format!("inode {}: unlinked while open", ino.0));
                }
            } else {
                report.problems.push(format!("inode {}: not reachable from any volume", ino.0));
            }
        }
        if inode.kind == Kind::File && inode.data.is_none() {
            report.problems.push(format!("inode {}: regular file without a data file", ino.0));
        }
        // Its own data file and the shared ones under it.
        for id in inode.data_files() {
            match core.data().stat(id) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.problems.push(format!("inode {}: data file {:016x} is missing", ino.0, id.0))
                }
                Err(e) => report.problems.push(format!("inode {}: data file {:016x}: {e}", ino.0, id.0)),
            }
        }
    }
    // Layers: every one holding records is read by some view, and a file's data belongs to a
    // layer its view reads.
    let read: HashSet<u64> = views.values().flat_map(|v| v.layers.iter().copied()).collect();
    for layer in meta.layers_with_records()? {
        if !read.contains(&layer) {
            report.problems.push(format!("layer {layer} holds records no volume or snapshot reads"));
        }
    }
    for (ino, inode) in &inodes {
        let in_chain = views.get(&ino.view()).is_some_and(|v| v.layers.contains(&inode.data_layer));
        if inode.kind == Kind::File && !in_chain {
            report.problems.push(format!(
                "inode {}: its data file belongs to layer {}, which its view does not read",
                ino.0, inode.data_layer
            ));
        }
    }
    for ino in &orphans {
        if !inodes.contains_key(ino) {
            report.problems.push(format!("orphan record for missing inode {}", ino.0));
        }
    }
    let referenced: HashSet<_> = inodes.values().flat_map(|i| i.data_files().collect::<Vec<_>>()).collect();
    let data_files = core.data().all()?;
    report.data_files = data_files.len();
    let unreferenced: Vec<_> = data_files.into_iter().filter(|id| !referenced.contains(id)).collect();
    for id in &unreferenced {
        report.reclaimable.push(format!("data file {:016x}: no inode refers to it", id.0));
    }
    if repair && !report.reclaimable.is_empty() {
        // Orphan inodes may be open while a daemon serves the pool; only an offline check
        // may remove them.
        let orphan_inodes: Vec<Ino> = if offline { orphans.into_iter().collect() } else { Vec::new() };
        core.reclaim(&unreferenced, &orphan_inodes)?;
        report.repaired = true;
    }
    Ok(report)
}
