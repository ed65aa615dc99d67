//! The kernel connections of every mount, served by one pool of worker threads.
//!
//! Each mount is a `/dev/fuse` connection. Its descriptor is non-blocking and sits in one epoll
//! set with EPOLLONESHOT: the worker woken for it reads one request, arms the descriptor again
//! while the connection has room for another request in flight, and answers. So there are as
//! many workers as requests the machine should run at once, however many mounts there are,
//! and a connection never holds more than `per_connection` of them: one mount's slow requests
//! (an fsync of a large file) leave workers for the others. Requests that wait on the disk
//! must not take every worker either: a worker about to answer one when no other is idle
//! starts another (up to `max_workers`), and workers beyond the first ones leave once idle
//! for `IDLE_EXIT`. So the threads follow the requests waiting on the disk, never the mounts.
//! A worker owns one buffer the size of the largest request, whose pages are touched only as
//! far as requests fill them.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rustix::event::epoll;
use rustix::io::Errno;

use super::wire::abi::{BackingMap, DEV_IOC_BACKING_CLOSE, DEV_IOC_BACKING_OPEN};
use super::wire::request::is_quick;

/// What serves the requests of a connection.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request (`bytes`: its header and body as the kernel wrote them) through
    /// `conn`. Called on any worker, possibly for several requests of one connection at once.
    fn request(&self, conn: &Arc<Connection>, bytes: &[u8]);

    /// The kernel ended the connection: unmounted, or aborted.
    fn ended(&self, _conn: &Connection) {}
}

/// One kernel connection.
pub struct Connection {
    id: u64,
    device: OwnedFd,
    handler: Arc<dyn Handler>,
    state: Mutex<ConnectionState>,
    /// Signalled when the connection ends.
    end: Condvar,
}

#[derive(Default)]
struct ConnectionState {
    /// In the epoll set, ready to wake a worker for its next request.
    armed: bool,
    in_flight: usize,
    ended: bool,
}

impl Connection {
    /// Writes an answer or a notification. An answer to a request the kernel no longer waits
    /// for (it was interrupted, or the connection ended) is no error.
    pub fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        match rustix::io::writev(&self.device, parts) {
            Ok(_) | Err(Errno::NOENT) | Err(Errno::NODEV) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the kernel has ended the connection (the mount is gone or aborted).
    pub fn is_ended(&self) -> bool {
        self.state().ended
    }

    /// Waits up to `limit` for the connection to end; returns whether it has.
    pub fn wait_ended(&self, limit: Duration) -> bool {
        let state = self.state();
        let (state, _) = self.end.wait_timeout_while(state, limit, |s| !s.ended).unwrap_or_else(|p| p.into_inner());
        state.ended
    }

    /// The `/dev/fuse` descriptor, for the ioctls that name the connection (backing files).
    pub fn device(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    fn state(&self) -> MutexGuard<'_, ConnectionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `file` with the kernel as a backing file for passthrough opens; the id goes
    /// in the open's answer, and the registration ends when the returned value drops.
    pub fn open_backing(self: &Arc<Self>, file: &std::fs::File) -> io::Result<Backing> {
        use std::os::fd::AsRawFd;
        let map = BackingMap { fd: file.as_raw_fd(), ..BackingMap::default() };
        // SAFETY: the ioctl reads one `fuse_backing_map` from the pointer, valid for the call.
        let id = unsafe { libc::ioctl(self.device.as_raw_fd(), DEV_IOC_BACKING_OPEN as _, &map) };
        if id <= 0 {
            return Err(if id < 0 { io::Error::last_os_error() } else { io::ErrorKind::InvalidData.into() });
        }
        Ok(Backing { id, connection: self.clone() })
    }
}

/// A backing file the kernel knows by `id` on one connection.
pub struct Backing {
    id: i32,
    connection: Arc<Connection>,
}

impl Backing {
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let id = self.id as u32;
        // SAFETY: the ioctl reads one u32 from the pointer, valid for the call.
        let closed = unsafe { libc::ioctl(self.connection.device.as_raw_fd(), DEV_IOC_BACKING_CLOSE as _, &id) };
        if closed < 0 {
            tracing::debug!(backing = self.id, error = %io::Error::last_os_error(), "closing a backing file");
        }
    }
}

/// The epoll token that wakes every worker to stop.
const STOP: u64 = u64::MAX;

/// The workers and the connections they serve.
pub struct Sessions {
    epoll: OwnedFd,
    /// Readable from `stop` on: every worker sees it and returns.
    stop_event: OwnedFd,
    connections: DashMap<u64, Arc<Connection>>,
    next_id: AtomicU64,
    per_connection: usize,
    request_size: usize,
    stopping: AtomicBool,
    /// The workers that stay; more may start while requests wait on the disk.
    base_workers: usize,
    max_workers: usize,
    /// Workers running, and those waiting for an event.
    live: AtomicUsize,
    idle: AtomicUsize,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// How long a worker beyond the first ones waits for an event before it leaves.
const IDLE_EXIT: Duration = Duration::from_secs(5);

impl Sessions {
    /// Starts `workers` threads, more while requests wait on the disk, `max_workers` at most;
    /// a connection may hold `per_connection` of them at once; `request_size` is the largest
    /// request the kernel may write (max_write plus headers).
    pub fn start(
        workers: usize,
        max_workers: usize,
        per_connection: usize,
        request_size: usize,
    ) -> io::Result<Arc<Sessions>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let stop_event = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        epoll::add(&epoll, &stop_event, epoll::EventData::new_u64(STOP), epoll::EventFlags::IN)?;
        let sessions = Arc::new(Sessions {
            epoll,
            stop_event,
            connections: DashMap::new(),
            next_id: AtomicU64::new(0),
            per_connection: per_connection.max(1),
            request_size,
            stopping: AtomicBool::new(false),
            base_workers: workers.max(1),
            max_workers: max_workers.max(workers.max(1)),
            live: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
        });
        for _ in 0..sessions.base_workers {
            sessions.start_worker()?;
        }
        Ok(sessions)
    }

    fn start_worker(self: &Arc<Self>) -> io::Result<()> {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        workers.retain(|w| !w.is_finished());
        let n = self.live.fetch_add(1, Ordering::SeqCst);
        let sessions = self.clone();
        match std::thread::Builder::new().name(format!("fuse-{n}")).spawn(move || sessions.work()) {
            Ok(worker) => {
                workers.push(worker);
                Ok(())
            }
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Before a request that may wait on the disk: another worker, unless one is idle.
    fn keep_one_idle(self: &Arc<Self>) {
        if self.idle.load(Ordering::SeqCst) == 0 && self.live.load(Ordering::SeqCst) < self.max_workers {
            if let Err(e) = self.start_worker() {
                tracing::warn!(error = %e, "cannot start another FUSE worker");
            }
        }
    }

    /// Whether this worker, idle for `IDLE_EXIT`, leaves: only beyond the first ones.
    fn leave_when_idle(&self) -> bool {
        let mut live = self.live.load(Ordering::SeqCst);
        while live > self.base_workers {
            match self.live.compare_exchange(live, live - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => live = now,
            }
        }
        false
    }

    /// Serves the connection of `device` (an open `/dev/fuse`) with `handler` from now on.
    pub fn add(&self, device: OwnedFd, handler: Arc<dyn Handler>) -> io::Result<Arc<Connection>> {
        let flags = rustix::fs::fcntl_getfl(&device)?;
        rustix::fs::fcntl_setfl(&device, flags | rustix::fs::OFlags::NONBLOCK)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection { id, device, handler, state: Mutex::default(), end: Condvar::new() });
        self.connections.insert(id, conn.clone());
        let mut state = conn.state();
        epoll::add(&self.epoll, &conn.device, epoll::EventData::new_u64(id), armed_for_one())?;
        state.armed = true;
        drop(state);
        Ok(conn)
    }

    /// How many connections are served.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Stops every worker once it has answered what it is serving; the connections stay
    /// mounted, their descriptors closed with the last reference.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = rustix::io::write(&self.stop_event, &1u64.to_ne_bytes());
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }

    /// How many workers run now.
    pub fn workers(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    fn work(self: Arc<Self>) {
        let mut buffer = vec![0u8; self.request_size];
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1);
        let idle_exit = rustix::event::Timespec { tv_sec: IDLE_EXIT.as_secs() as i64, tv_nsec: 0 };
        loop {
            events.clear();
            self.idle.fetch_add(1, Ordering::SeqCst);
            let waited = epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), Some(&idle_exit));
            self.idle.fetch_sub(1, Ordering::SeqCst);
            match waited {
                Ok(0) if self.leave_when_idle() => return,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waiting for FUSE requests failed");
                    return;
                }
            }
            for event in &events {
                let id = event.data.u64();
                if id == STOP {
                    return;
                }
                let Some(conn) = self.connections.get(&id).map(|c| c.clone()) else { continue };
                self.serve(&conn, &mut buffer);
            }
        }
    }

    /// Serves `conn` after an event: reads and answers its requests until none comes within
    /// `STAY` of the last answer, then leaves it armed for the next event.
    ///
    /// While a request that may take long is answered the connection is armed, so that other
    /// workers take the requests that come meanwhile; while the worker waits for the next one
    /// it is not, so
    /// that no sleeping worker is woken for a request this one is about to read. Whoever
    /// received an event or stopped reading arms the connection when it leaves: an event
    /// disarms it in the kernel before `armed` says so.
    fn serve(self: &Arc<Self>, conn: &Arc<Connection>, buffer: &mut [u8]) {
        conn.state().armed = false;
        let mut answered: Option<Instant> = None;
        loop {
            match rustix::io::read(&conn.device, &mut *buffer) {
                Ok(len) => {
                    conn.state().in_flight += 1;
                    // A quick request holds the connection's next ones back for microseconds
                    // at most: not worth a worker woken for them.
                    if !is_quick(&buffer[..len]) {
                        self.keep_one_idle();
                        self.arm(conn, Arm::IfDisarmed);
                    }
                    conn.handler.request(conn, &buffer[..len]);
                    conn.state().in_flight -= 1;
                    self.arm(conn, Arm::Off);
                    answered = Some(Instant::now());
                }
                // None yet, another worker took it, or the kernel withdrew an interrupted one.
                Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::NOENT) => {
                    if answered.is_some_and(|at| at.elapsed() < STAY) {
                        std::hint::spin_loop();
                        continue;
                    }
                    break;
                }
                Err(Errno::NODEV) => return self.end(conn),
                Err(e) => {
                    tracing::error!(connection = conn.id, error = %e, "reading a FUSE request failed; ending the connection");
                    return self.end(conn);
                }
            }
        }
        self.arm(conn, Arm::Always);
    }

    fn arm(&self, conn: &Connection, how: Arm) {
        let mut state = conn.state();
        let events = match how {
            Arm::Off if !state.armed => return,
            Arm::Off => epoll::EventFlags::ONESHOT,
            Arm::IfDisarmed if state.armed => return,
            _ if state.ended || state.in_flight >= self.per_connection => return,
            _ => armed_for_one(),
        };
        match epoll::modify(&self.epoll, &conn.device, epoll::EventData::new_u64(conn.id), events) {
            Ok(()) => state.armed = how != Arm::Off,
            Err(e) => {
                drop(state);
                tracing::error!(connection = conn.id, error = %e, "cannot wait for FUSE requests; ending the connection");
                self.end(conn);
            }
        }
    }

    fn end(&self, conn: &Connection) {
        {
            let mut state = conn.state();
            if state.ended {
                return;
            }
            state.ended = true;
        }
        let _ = epoll::delete(&self.epoll, &conn.device);
        self.connections.remove(&conn.id);
        conn.handler.ended(conn);
        let _state = conn.state();
        conn.end.notify_all();
    }
}

/// How long a worker stays reading a connection after answering it. Most requests follow
/// the answer to the last one within a few microseconds (an application's next syscall);
/// taking it at once is much cheaper than waking a sleeping worker, which on a VM costs an
/// interrupt to another CPU and tens of microseconds.
const STAY: Duration = Duration::from_micros(50);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arm {
    /// Wake a worker for the connection's next request, unless `armed` says it is so.
    IfDisarmed,
    /// Wake a worker for the next request whatever `armed` says (the kernel may have
    /// disarmed it on an event).
    Always,
    /// Wake no one: the worker waits for the next request itself.
    Off,
}

fn armed_for_one() -> epoll::EventFlags {
    epoll::EventFlags::IN | epoll::EventFlags::ONESHOT
}

/// Opens a new FUSE connection and mounts it at `target` (a directory, or a regular file);
/// `options` are the fuse mount options besides the descriptor and the root's type (e.g.
/// `default_permissions,allow_other`).
pub fn mount(target: &Path, source: &str, flags: rustix::mount::MountFlags, options: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let device = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    // The root takes the mountpoint's type: a directory, or a regular file for a mount of one.
    let rootmode = if std::fs::metadata(target)?.is_file() { libc::S_IFREG } else { libc::S_IFDIR };
    let data = format!(
        "fd={},rootmode={rootmode:o},user_id=0,group_id=0{}{options}",
        std::os::fd::AsRawFd::as_raw_fd(&device),
        if options.is_empty() { "" } else { "," }
    );
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(source, target, "fuse.volfs", flags, data.as_c_str())?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    //! Real mounts through the kernel (root and /dev/fuse, as every FUSE test here).
    use super::*;
    use crate::fuse::wire::abi::{Attr, AttrOut, EntryOut, Kstatfs};
    use crate::fuse::wire::reply;
    use crate::fuse::wire::request::{parse, Operation};
    use rustix::mount::MountFlags;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A root directory and nothing else; a lookup of `held…`, or an rmdir of `slow…`, waits
    /// until the test lets it go.
    struct Empty {
        held: Mutex<mpsc::Receiver<()>>,
        ended: mpsc::Sender<()>,
    }

    impl Handler for Empty {
        fn request(&self, conn: &Arc<Connection>, bytes: &[u8]) {
            let req = parse(bytes).expect("the kernel writes well-formed requests");
            let unique = req.unique();
            let answer = match req.op {
                Operation::Init(init) => {
                    // Lookups in one directory at once (else the kernel sends one at a time).
                    let wanted = crate::fuse::wire::abi::init_flags::PARALLEL_DIROPS;
                    let ours = reply::InitConfig { wanted, max_write: 1 << 20, ..Default::default() };
                    reply::init(unique, &reply::Negotiated::new(&init, &ours).expect("FUSE 7"))
                }
                Operation::Getattr(_) => {
                    let attr = Attr { ino: 1, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Default::default() };
                    reply::attr(unique, &AttrOut { attr, ..Default::default() })
                }
                Operation::Lookup { name } if name.as_encoded_bytes().starts_with(b"held") => {
                    let _ = self.held.lock().unwrap().recv();
                    reply::error(unique, libc::ENOENT)
                }
                Operation::Lookup { name } if name.as_encoded_bytes().starts_with(b"slow") => {
                    let attr = Attr { ino: 2, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Default::default() };
                    reply::entry(unique, &EntryOut { nodeid: 2, attr, ..Default::default() })
                }
                Operation::Lookup { .. } => reply::error(unique, libc::ENOENT),
                Operation::Rmdir { name } if name.as_encoded_bytes().starts_with(b"slow") => {
                    let _ = self.held.lock().unwrap().recv();
                    reply::error(unique, libc::EROFS)
                }
                Operation::Statfs => reply::statfs(unique, &Kstatfs::default()),
                Operation::Forget(_) | Operation::BatchForget(_) => return,
                _ => reply::error(unique, libc::ENOSYS),
            };
            conn.send(&[IoSlice::new(&answer)]).expect("answering");
        }

        fn ended(&self, _conn: &Connection) {
            let _ = self.ended.send(());
        }
    }

    impl Empty {
        /// The handler, the sender that lets one held request go, and the receiver of ends.
        fn new() -> (Arc<Empty>, mpsc::Sender<()>, mpsc::Receiver<()>) {
            let (release, held) = mpsc::channel();
            let (ended, ends) = mpsc::channel();
            (Arc::new(Empty { held: Mutex::new(held), ended }), release, ends)
        }
    }

    /// A new directory `name` in `dir`, mounted and served by `sessions` with `handler`.
    fn mount_new(
        sessions: &Sessions,
        dir: &Path,
        name: &str,
        flags: MountFlags,
        handler: Arc<dyn Handler>,
    ) -> std::path::PathBuf {
        let at = dir.join(name);
        std::fs::create_dir(&at).unwrap();
        let device = mount(&at, "sessiontest", flags, "default_permissions,allow_other").unwrap();
        sessions.add(device, handler).unwrap();
        at
    }

    /// A root directory with one regular file, `file`, whose opens the kernel passes
    /// through to `data`; counts the reads that reach the daemon.
    struct PassedThrough {
        data: std::fs::File,
        size: u64,
        backing: Mutex<Option<Backing>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl PassedThrough {
        fn file_attr(&self) -> Attr {
            Attr { ino: 2, mode: libc::S_IFREG | 0o644, nlink: 1, size: self.size, ..Default::default() }
        }
    }

    impl Handler for PassedThrough {
        fn request(&self, conn: &Arc<Connection>, bytes: &[u8]) {
            let req = parse(bytes).expect("the kernel writes well-formed requests");
            let unique = req.unique();
            let root = || Attr { ino: 1, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Default::default() };
            let answer = match req.op {
                Operation::Init(init) => {
                    let wanted = crate::fuse::wire::abi::init_flags::PASSTHROUGH;
                    let ours =
                        reply::InitConfig { wanted, max_write: 1 << 20, max_stack_depth: 1, ..Default::default() };
                    reply::init(unique, &reply::Negotiated::new(&init, &ours).expect("FUSE 7"))
                }
                Operation::Getattr(_) => {
                    let attr = if req.header.nodeid == 1 { root() } else { self.file_attr() };
                    reply::attr(unique, &AttrOut { attr, ..Default::default() })
                }
                Operation::Lookup { name } if name == "file" => {
                    reply::entry(unique, &EntryOut { nodeid: 2, attr: self.file_attr(), ..Default::default() })
                }
                Operation::Lookup { .. } => reply::error(unique, libc::ENOENT),
                Operation::Open(_) => {
                    let mut backing = self.backing.lock().unwrap();
                    let backing = backing.get_or_insert_with(|| conn.open_backing(&self.data).unwrap());
                    reply::open(unique, 7, crate::fuse::wire::abi::fopen::PASSTHROUGH, backing.id())
                }
                Operation::Read(_) => {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                    reply::error(unique, libc::EIO)
                }
                Operation::Release(_) | Operation::Flush(_) => reply::empty(unique),
                Operation::Forget(_) | Operation::BatchForget(_) => return,
                _ => reply::error(unique, libc::ENOSYS),
            };
            conn.send(&[IoSlice::new(&answer)]).expect("answering");
        }
    }

    #[test]
    fn an_open_passed_through_reads_the_backing_file_without_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let backing_path = dir.path().join("backing");
        std::fs::write(&backing_path, &content).unwrap();
        let handler = Arc::new(PassedThrough {
            data: std::fs::File::open(&backing_path).unwrap(),
            size: content.len() as u64,
            backing: Mutex::new(None),
            reads: Default::default(),
        });
        let sessions = Sessions::start(2, 2, 2, (1 << 20) + 4096).unwrap();
        let at = mount_new(&sessions, dir.path(), "m", MountFlags::RDONLY, handler.clone());
        let read = std::fs::read(at.join("file"));
        rustix::mount::unmount(&at, rustix::mount::UnmountFlags::DETACH).unwrap();
        assert_eq!(read.unwrap(), content, "the kernel reads the backing file");
        assert_eq!(handler.reads.load(Ordering::Relaxed), 0, "no read reached the daemon");
        sessions.stop();
    }

    #[test]
    fn a_request_that_may_take_long_leaves_the_next_ones_of_its_mount_to_another_worker() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::start(2, 2, 2, (1 << 20) + 4096).unwrap();
        let (handler, release, _ends) = Empty::new();
        let at = mount_new(&sessions, dir.path(), "m", MountFlags::empty(), handler);
        rustix::fs::statvfs(&at).expect("the mount answers");
        let held_at = at.join("slow");
        let rmdir = std::thread::spawn(move || std::fs::remove_dir(held_at));
        // Asked after the rmdir (whose worker waits until released), answered before it.
        let (answered, statfs) = mpsc::channel();
        let asked = at.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _ = answered.send(rustix::fs::statvfs(&asked).map(|_| ()));
        });
        let result = statfs.recv_timeout(Duration::from_secs(30));
        release.send(()).unwrap();
        assert_eq!(rmdir.join().unwrap().unwrap_err().raw_os_error(), Some(libc::EROFS));
        result.expect("a statfs is answered while an rmdir of the same mount waits").unwrap();
        rustix::mount::unmount(&at, rustix::mount::UnmountFlags::empty()).unwrap();
        sessions.stop();
    }

    #[test]
    fn requests_waiting_on_every_worker_start_more_workers_which_leave_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::start(2, 16, 2, (1 << 20) + 4096).unwrap();
        let (handler, release, _ends) = Empty::new();
        let mountpoints: Vec<_> = (0..5)
            .map(|i| {
                let at = mount_new(&sessions, dir.path(), &format!("m{i}"), MountFlags::empty(), handler.clone());
                rustix::fs::statvfs(&at).expect("the mount answers");
                at
            })
            .collect();
        // Four mounts each wait on a request that may take long: twice the two workers.
        let waiting: Vec<_> = mountpoints[..4]
            .iter()
            .map(|at| {
                let slow = at.join("slow");
                std::thread::spawn(move || std::fs::remove_dir(slow))
            })
            .collect();
        let (answered, statfs) = mpsc::channel();
        let last = mountpoints[4].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = answered.send(rustix::fs::statvfs(&last).map(|_| ()));
        });
        let result = statfs.recv_timeout(Duration::from_secs(30));
        let during = sessions.workers();
        for _ in &waiting {
            release.send(()).unwrap();
        }
        for w in waiting {
            assert_eq!(w.join().unwrap().unwrap_err().raw_os_error(), Some(libc::EROFS));
        }
        result.expect("the fifth mount is answered while four wait on the disk").unwrap();
        assert!(during > 2, "{during} workers while four requests wait");
        let deadline = Instant::now() + IDLE_EXIT * 3;
        while sessions.workers() > 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(sessions.workers(), 2, "the workers started for waiting requests leave when idle");
        for at in &mountpoints {
            rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()).unwrap();
        }
        sessions.stop();
    }

    #[test]
    fn two_workers_serve_twenty_mounts_and_one_held_mount_stops_none_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::start(2, 2, 1, (1 << 20) + 4096).unwrap();
        let (handler, release, ends) = Empty::new();
        let mountpoints: Vec<_> = (0..20)
            .map(|i| mount_new(&sessions, dir.path(), &format!("m{i}"), MountFlags::empty(), handler.clone()))
            .collect();
        assert_eq!(sessions.len(), 20);

        // Two lookups (of two names: the kernel sends one lookup of a name at a time) that
        // wait on the first mount: it may hold one worker only.
        let first = mountpoints[0].clone();
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let at = first.join(format!("held{i}"));
                std::thread::spawn(move || std::fs::symlink_metadata(at).map(|_| ()))
            })
            .collect();
        // Every other mount answers meanwhile, on the worker left.
        let others = mountpoints[1..].to_vec();
        let (answered, all_answered) = mpsc::channel();
        std::thread::spawn(move || {
            for at in &others {
                let looked_up = std::fs::symlink_metadata(at.join("x")).map_err(|e| e.raw_os_error());
                let statfs = rustix::fs::statvfs(at).map(|_| ());
                let _ = answered.send((at.clone(), looked_up.err(), statfs));
            }
        });
        for _ in 1..mountpoints.len() {
            let (at, lookup_errno, statfs) = all_answered
                .recv_timeout(Duration::from_secs(30))
                .expect("the other mounts are answered while the first holds its worker");
            assert_eq!(lookup_errno, Some(Some(libc::ENOENT)), "{}", at.display());
            assert!(statfs.is_ok(), "statfs of {}", at.display());
        }
        release.send(()).unwrap();
        release.send(()).unwrap();
        for w in waiting {
            assert_eq!(w.join().unwrap().unwrap_err().raw_os_error(), Some(libc::ENOENT));
        }

        for at in &mountpoints {
            rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()).unwrap();
        }
        for _ in &mountpoints {
            ends.recv_timeout(Duration::from_secs(30)).expect("every connection ends with its unmount");
        }
        assert!(sessions.is_empty());
        sessions.stop();
    }
}
