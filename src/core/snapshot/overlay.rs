//! Data files shared in ranges. When a view changes a file whose data file a snapshot or clone
//! shares, it does not copy the file: it puts a new, empty data file of its own on top and
//! copies a chunk (1 MiB) up into it the first time it changes that chunk. The shared files
//! below form a stack, newest first; each holds some chunks over the ones below it, and a
//! truncate hides what lies below past the new end.
//!
//! Which chunks the top holds is kept in memory while the file is open and written into the
//! inode record at fsync, at the last close and before a snapshot is cut, each time after the
//! top's data is durable, so a record never names a chunk the disk may not have.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::data::blocks::allocated;
use crate::data::DataStore;
use crate::meta::{DataId, Level, Under};

/// The unit of copying up.
pub const CHUNK: u64 = 1 << 20;
/// The most shared data files under a file; a change past that copies the file whole instead.
pub const MAX_DEPTH: usize = 8;
/// Blocks of zeros are not written when a chunk is copied up, so holes stay holes.
const BLOCK: usize = 4096;

/// An open file's stack: its own level and the shared data files below, open for reading.
#[derive(Debug)]
pub struct Overlay {
    pub top: Level,
    lower: Vec<(DataId, Level, File)>,
    /// The top level changed since the inode record was written.
    pub dirty: bool,
}

/// One level of a stack, as the readers below see it.
type LevelRef<'a> = (&'a Level, &'a File);

impl Overlay {
    pub fn load(data: &DataStore, under: &Under) -> io::Result<Overlay> {
        let lower = under
            .lower
            .iter()
            .map(|(id, level)| Ok((*id, level.clone(), File::open(data.path(*id))?)))
            .collect::<io::Result<_>>()?;
        Ok(Overlay { top: under.top.clone(), lower, dirty: false })
    }

    /// What the inode record keeps.
    pub fn under(&self) -> Under {
        Under { top: self.top.clone(), lower: self.lower.iter().map(|(id, l, _)| (*id, l.clone())).collect() }
    }

    fn stack<'a>(&'a self, top: &'a File) -> Vec<LevelRef<'a>> {
        std::iter::once((&self.top, top)).chain(self.lower.iter().map(|(_, l, f)| (l, f))).collect()
    }

    /// Reads the file's bytes at `offset` into `buf` (the caller keeps it within the size).
    pub fn read(&self, top: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read_stack(&self.stack(top), offset, buf)
    }

    /// Bytes of data blocks the file holds in `[start, end)`: its own where it holds the chunk,
    /// the shared files' below.
    pub fn allocated(&self, top: &File, start: u64, end: u64) -> io::Result<u64> {
        allocated_stack(&self.stack(top), start, end)
    }

    /// Bytes of data blocks the whole file holds: all of its own data file's, and the shared
    /// files' below where its own does not hold the chunk.
    pub fn allocated_total(&self, top: &File) -> io::Result<u64> {
        let mut total = crate::data::blocks::allocated_total(top)?;
        let below: Vec<LevelRef<'_>> = self.lower.iter().map(|(_, l, f)| (l, f)).collect();
        let limit = self.top.limit.next_multiple_of(BLOCK as u64);
        for chunk in 0..limit.div_ceil(CHUNK) {
            if !self.top.held.contains(chunk) {
                total += allocated_stack(&below, chunk * CHUNK, ((chunk + 1) * CHUNK).min(limit))?;
            }
        }
        Ok(total)
    }

    /// Makes the top hold every chunk that `[start, end)` touches, copying up what the shared
    /// files show there.
    pub fn copy_up(&mut self, top: &File, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        for chunk in start / CHUNK..end.div_ceil(CHUNK) {
            if self.top.held.contains(chunk) {
                continue;
            }
            let (from, to) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(self.top.limit));
            if from < to {
                let mut buf = vec![0u8; (to - from) as usize];
                let below: Vec<LevelRef<'_>> = self.lower.iter().map(|(_, l, f)| (l, f)).collect();
                read_stack(&below, from, &mut buf)?;
                write_blocks(top, from, &buf)?;
            }
            self.top.held.insert(chunk);
            self.dirty = true;
        }
        Ok(())
    }

    /// Writes everything the stack shows, `size` bytes, into the empty `into`, leaving holes
    /// where there are zeros.
    pub fn copy_whole(&self, top: &File, into: &File, size: u64) -> io::Result<()> {
        let mut at = 0;
        while at < size {
            let mut buf = vec![0u8; CHUNK.min(size - at) as usize];
            self.read(top, at, &mut buf)?;
            write_blocks(into, at, &buf)?;
            at += buf.len() as u64;
        }
        into.set_len(size)
    }

    /// The file was truncated to `size`: what lies below stops showing there.
    pub fn truncated(&mut self, size: u64) {
        if size < self.top.limit {
            self.top.limit = size;
            self.dirty = true;
        }
    }
}

/// Writes the blocks of `buf` that are not all zeros at `offset`.
fn write_blocks(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    for (i, block) in buf.chunks(BLOCK).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.write_all_at(block, offset + (i * BLOCK) as u64)?;
        }
    }
    Ok(())
}

/// Splits `[offset, offset + len)` at chunk edges and at `limit`.
fn segments(offset: u64, len: u64, limit: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let mut next = ((at / CHUNK + 1) * CHUNK).min(end);
        if at < limit && limit < next {
            next = limit;
        }
        let seg = (at, next);
        at = next;
        Some(seg)
    })
}

/// Where a level shows a byte range that lies in one chunk and on one side of its limit: the
/// level itself (true), zeros (None) or the levels below (false).
fn shows(level: &Level, limit: u64, last: bool, at: u64) -> Option<bool> {
    if last || level.held.contains(at / CHUNK) {
        Some(true)
    } else if at >= limit {
        None
    } else {
        Some(false)
    }
}

fn read_stack(stack: &[LevelRef<'_>], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let Some(&(level, file)) = stack.first() else {
        buf.fill(0);
        return Ok(());
    };
    let last = stack.len() == 1;
    for (from, to) in segments(offset, buf.len() as u64, level.limit) {
        let part = &mut buf[(from - offset) as usize..(to - offset) as usize];
        match shows(level, level.limit, last, from) {
            Some(true) => read_full(file, from, part)?,
            None => part.fill(0),
            Some(false) => read_stack(&stack[1..], from, part)?,
        }
    }
    Ok(())
}

fn allocated_stack(stack: &[LevelRef<'_>], start: u64, end: u64) -> io::Result<u64> {
    let Some(&(level, file)) = stack.first() else { return Ok(0) };
    let last = stack.len() == 1;
    let mut total = 0;
    // Blocks are counted whole: one the limit cuts belongs to the levels below.
    let limit = level.limit.next_multiple_of(BLOCK as u64);
    for (from, to) in segments(start, end.saturating_sub(start), limit) {
        total += match shows(level, limit, last, from) {
            Some(true) | None => allocated(file, from, to)?,
            Some(false) => allocated_stack(&stack[1..], from, to)?,
        };
    }
    Ok(total)
}

/// pread until `buf` is full; zeros past the end of the file.
fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ChunkSet;

    fn file(dir: &std::path::Path, name: &str, content: &[(u64, &[u8])], size: u64) -> File {
        let f = File::options().read(true).write(true).create(true).truncate(true).open(dir.join(name)).unwrap();
        for (at, bytes) in content {
            f.write_all_at(bytes, *at).unwrap();
        }
        f.set_len(size).unwrap();
        f
    }

    fn read(ov: &Overlay, top: &File, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![9u8; len];
        ov.read(top, offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_stack_reads_each_chunk_from_the_newest_level_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * CHUNK;
        // Bottom: "a" everywhere it was written; middle holds chunk 1 ("b"); top is empty.
        let bottom = file(dir.path(), "bottom", &[(0, &vec![b'a'; size as usize])], size);
        let middle = file(dir.path(), "middle", &[(CHUNK, &vec![b'b'; CHUNK as usize])], size);
        let top = file(dir.path(), "top", &[], size);
        let mut middle_held = ChunkSet::default();
        middle_held.insert(1);
        let mut ov = Overlay {
            top: Level { held: ChunkSet::default(), limit: size },
            lower: vec![
                (DataId(2), Level { held: middle_held, limit: size }, middle),
                (DataId(1), Level::default(), bottom),
            ],
            dirty: false,
        };
        let all = read(&ov, &top, 0, size as usize);
        assert!(all[..CHUNK as usize].iter().all(|&b| b == b'a'));
        assert!(all[CHUNK as usize..2 * CHUNK as usize].iter().all(|&b| b == b'b'));
        assert!(all[2 * CHUNK as usize..].iter().all(|&b| b == b'a'));
        assert_eq!(ov.allocated(&top, 0, size).unwrap(), size);

        // A change in chunk 2 copies it up first; the rest still comes from below.
        ov.copy_up(&top, 2 * CHUNK + 10, 2 * CHUNK + 20).unwrap();
        top.write_all_at(b"XY", 2 * CHUNK + 10).unwrap();
        assert!(ov.dirty && ov.top.held.contains(2) && !ov.top.held.contains(0));
        let after = read(&ov, &top, 2 * CHUNK + 8, 6);
        assert_eq!(after, b"aaXYaa");
        assert_eq!(ov.allocated(&top, 0, size).unwrap(), size);

        // Truncated into chunk 0 and grown again: zeros past the cut, below and above.
        ov.truncated(100);
        top.set_len(size).unwrap();
        let grown = read(&ov, &top, 90, 20);
        assert_eq!(&grown[..10], &[b'a'; 10]);
        assert_eq!(&grown[10..], &[0; 10]);
        assert_eq!(read(&ov, &top, CHUNK + 5, 4), [0; 4]);
    }

    #[test]
    fn copying_up_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let bottom = file(dir.path(), "bottom", &[(8192, b"data")], CHUNK);
        let top = file(dir.path(), "top", &[], CHUNK);
        let mut ov = Overlay {
            top: Level { held: ChunkSet::default(), limit: CHUNK },
            lower: vec![(DataId(1), Level::default(), bottom)],
            dirty: false,
        };
        ov.copy_up(&top, 0, 1).unwrap();
        assert_eq!(crate::data::blocks::allocated_total(&top).unwrap(), 4096);
        assert_eq!(read(&ov, &top, 8192, 4), b"data");
    }
}
