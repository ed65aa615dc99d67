//! The blocks a data file holds, read from the pool's filesystem itself (FIEMAP; on a
//! filesystem without it, such as the tmpfs of memory volumes, SEEK_DATA/SEEK_HOLE): holes
//! cost nothing, preallocated (fallocate) blocks count. Capacity accounting and snapshot
//! sizes are built on these counts, so they follow what the disk really holds.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A half-open byte range `[start, end)`.
pub type Range = (u64, u64);

/// How many extents one FIEMAP call returns at most.
const EXTENTS_PER_CALL: usize = 128;
/// FS_IOC_FIEMAP: _IOWR('f', 11, struct fiemap).
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
/// FIEMAP_EXTENT_LAST: the file has no extent after this one.
const FIEMAP_EXTENT_LAST: u32 = 0x1;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_PER_CALL],
}

/// The byte ranges of `file` that hold allocated blocks (written, delayed or preallocated)
/// and overlap `[start, end)`, clipped to it, in order.
pub fn allocated_ranges(file: &File, start: u64, end: u64) -> io::Result<Vec<Range>> {
    let mut out: Vec<Range> = Vec::new();
    let mut from = start;
    while from < end {
        let mut map = Fiemap {
            start: from,
            length: end - from,
            flags: 0,
            mapped_extents: 0,
            extent_count: EXTENTS_PER_CALL as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); EXTENTS_PER_CALL],
        };
        // SAFETY: FS_IOC_FIEMAP reads the header and fills at most extent_count extents of
        // the buffer it is given, which is this struct.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) && out.is_empty() {
                return data_ranges(file, start, end);
            }
            return Err(e);
        }
        let extents = &map.extents[..map.mapped_extents as usize];
        for e in extents {
            let (s, t) = (e.logical.max(start), (e.logical + e.length).min(end));
            if s < t {
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = t,
                    _ => out.push((s, t)),
                }
            }
        }
        match extents.last() {
            Some(e) if e.flags & FIEMAP_EXTENT_LAST == 0 && extents.len() == EXTENTS_PER_CALL => {
                from = e.logical + e.length;
            }
            _ => break,
        }
    }
    Ok(out)
}

/// The ranges that hold data, from SEEK_DATA/SEEK_HOLE: for filesystems without FIEMAP.
fn data_ranges(file: &File, start: u64, end: u64) -> io::Result<Vec<Range>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut from = start;
    // Seeking moves only this open file's offset, which the data files are never read through
    // (all I/O is positioned).
    while from < end {
        let data = match seek(file, SeekFrom::Data(from)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = seek(file, SeekFrom::Hole(data))?;
        let (s, t) = (data.max(start), hole.min(end));
        if s < t {
            out.push((s, t));
        }
        from = hole;
    }
    Ok(out)
}

/// Whether the filesystem maps `file`'s extents (FIEMAP), so that preallocated blocks can be
/// counted; tmpfs cannot, and shows only written pages.
pub fn maps_extents(file: &File) -> io::Result<bool> {
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX >> 1,
        flags: 0,
        mapped_extents: 0,
        extent_count: 0,
        reserved: 0,
        extents: [FiemapExtent::default(); EXTENTS_PER_CALL],
    };
    // SAFETY: with extent_count 0 the call only counts extents into the header.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) } != 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EOPNOTSUPP) { Ok(false) } else { Err(e) };
    }
    Ok(true)
}

/// Bytes of allocated blocks `file` holds in `[start, end)`.
pub fn allocated(file: &File, start: u64, end: u64) -> io::Result<u64> {
    Ok(allocated_ranges(file, start, end)?.iter().map(|(s, e)| e - s).sum())
}

/// Bytes of allocated blocks the whole of `file` holds.
pub fn allocated_total(file: &File) -> io::Result<u64> {
    allocated(file, 0, u64::MAX >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const B: u64 = 4096;

    #[test]
    fn allocation_follows_writes_fallocate_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("f")).unwrap();
        assert_eq!(allocated_total(&f).unwrap(), 0);
        f.write_all_at(b"x", 3 * B + 10).unwrap();
        assert_eq!(allocated_ranges(&f, 0, 10 * B).unwrap(), vec![(3 * B, 4 * B)]);
        f.set_len(100 * B).unwrap();
        assert_eq!(allocated_total(&f).unwrap(), B, "extending is free");
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 10 * B, 2 * B).unwrap();
        assert_eq!(allocated_total(&f).unwrap(), 3 * B);
        assert_eq!(allocated(&f, 4 * B, 11 * B).unwrap(), B);
    }

    #[test]
    fn filesystems_without_fiemap_count_the_ranges_that_hold_data() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm, a tmpfs: a filesystem without FIEMAP");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.write_at(&[1; 4096], 0).unwrap();
        file.write_at(&[2; 8192], 1 << 20).unwrap();
        file.set_len(4 << 20).unwrap();
        assert_eq!(data_ranges(&file, 0, 4 << 20).unwrap(), vec![(0, 4096), (1 << 20, (1 << 20) + 8192)]);
        assert_eq!(allocated_ranges(&file, 0, 4 << 20).unwrap(), data_ranges(&file, 0, 4 << 20).unwrap());
        assert_eq!(allocated(&file, 2048, (1 << 20) + 4096).unwrap(), 2048 + 4096);
        assert!(!maps_extents(&file).unwrap());
        let on_disk = tempfile::tempfile().unwrap();
        assert!(maps_extents(&on_disk).unwrap());
    }
}
