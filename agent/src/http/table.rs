//! The table of open connections by source address, and the order they are shed in.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::fd::RawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::warn;
use tokio::sync::Notify;

/// Shed connections are logged at most this often.
const SHED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where a connection is, and so how readily it is shed (in this order).
pub(super) const FRESH: u8 = 0;
/// Bytes came: a TLS handshake or a request head is under way.
pub(super) const STARTED: u8 = 1;
/// Kept alive after a response, waiting for the next request.
pub(super) const IDLE: u8 = 2;
/// A request in flight: never shed.
pub(super) const BUSY: u8 = 3;

/// One open connection in the [`Table`].
pub(super) struct Slot {
    pub(super) state: AtomicU8,
    /// The socket while the connection is [`FRESH`] (-1 after): its first bytes may have
    /// come before its task saw them.
    pub(super) fd: AtomicI32,
    /// Told when the connection is shed.
    pub(super) shed: Notify,
}

impl Slot {
    /// Whether a connection still taken for [`FRESH`] has bytes waiting: then it is
    /// [`STARTED`]. (A peek from the accept loop, which alone accepts sockets, so the
    /// descriptor is the connection's or, in a race with its end, one that is no
    /// socket of a connection.)
    fn started_unseen(&self) -> bool {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: recv of one byte into a valid buffer; MSG_PEEK leaves it for the reader.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
            && self
                .state
                .compare_exchange(FRESH, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The open connections by source address (oldest first).
pub(super) struct Table {
    cap: usize,
    per_source: usize,
    pub(super) open: Mutex<Open>,
    /// Shed since the last log line, and when that was.
    shed: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

#[derive(Default)]
pub(super) struct Open {
    next: u64,
    pub(super) count: usize,
    pub(super) by_source: HashMap<IpAddr, BTreeMap<u64, Arc<Slot>>>,
}

impl Open {
    /// The connection of `source` to shed first: the oldest in the lowest state.
    fn victim(&self, source: &IpAddr) -> Option<u64> {
        let conns = self.by_source.get(source)?;
        let mut best: Option<(u8, u64)> = None;
        for (&id, slot) in conns {
            let mut state = slot.state.load(Ordering::Acquire);
            if state == FRESH {
                if !slot.started_unseen() {
                    return Some(id);
                }
                state = STARTED;
            }
            if state != BUSY && best.is_none_or(|(s, _)| state < s) {
                best = Some((state, id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn take(&mut self, source: &IpAddr, id: u64) -> Option<Arc<Slot>> {
        let conns = self.by_source.get_mut(source)?;
        let slot = conns.remove(&id)?;
        if conns.is_empty() {
            self.by_source.remove(source);
        }
        self.count -= 1;
        Some(slot)
    }

    /// Shed one connection of the source with the most that has one to shed.
    fn shed_from_largest(&mut self) -> Option<Arc<Slot>> {
        let mut sources: Vec<(usize, IpAddr)> = self
            .by_source
            .iter()
            .map(|(ip, c)| (c.len(), *ip))
            .collect();
        sources.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        sources.into_iter().find_map(|(_, ip)| {
            let id = self.victim(&ip)?;
            self.take(&ip, id)
        })
    }
}

impl Table {
    pub(super) fn new(cap: usize, per_source: usize) -> Table {
        Table {
            cap: cap.max(1),
            per_source: per_source.max(1),
            open: Mutex::default(),
            shed: AtomicU64::new(0),
            logged: Mutex::new(None),
        }
    }

    /// A place for a new connection from `source`, shedding others to make room; None
    /// when every connection that would have to go has a request in flight.
    pub(super) fn admit(&self, source: IpAddr, fd: RawFd) -> Option<(u64, Arc<Slot>)> {
        let mut shed = Vec::new();
        let slot = {
            let mut open = self.open.lock().unwrap();
            if open.by_source.get(&source).map_or(0, BTreeMap::len) >= self.per_source {
                let id = open.victim(&source)?;
                shed.extend(open.take(&source, id));
            }
            if open.count >= self.cap {
                shed.push(open.shed_from_largest()?);
            }
            let slot = Arc::new(Slot {
                state: AtomicU8::new(FRESH),
                fd: AtomicI32::new(fd),
                shed: Notify::new(),
            });
            let id = open.next;
            open.next += 1;
            open.by_source
                .entry(source)
                .or_default()
                .insert(id, slot.clone());
            open.count += 1;
            (id, slot)
        };
        for s in &shed {
            s.shed.notify_one();
            self.note_shed(Some(source));
        }
        Some(slot)
    }

    /// Shed one connection, of the source with the most: false if none can go.
    pub(super) fn shed_one(&self) -> bool {
        let shed = self.open.lock().unwrap().shed_from_largest();
        shed.inspect(|s| s.shed.notify_one()).is_some()
    }

    pub(super) fn remove(&self, source: &IpAddr, id: u64) {
        self.open.lock().unwrap().take(source, id);
    }

    pub(super) fn note_shed(&self, source: Option<IpAddr>) {
        let n = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().unwrap();
        if logged.is_some_and(|t| t.elapsed() < SHED_LOG_EVERY) {
            return;
        }
        *logged = Some(Instant::now());
        self.shed.store(0, Ordering::Relaxed);
        let why = match source {
            Some(ip) => format!(
                "more connections than {} from one address or {} in all (the latest from {ip})",
                self.per_source, self.cap
            ),
            None => "out of file descriptors".to_string(),
        };
        warn!("shed {n} connections since the last report: {why}");
    }
}

/// A connection's place in the [`Table`], given up when the connection ends.
pub(super) struct Entry {
    pub(super) table: Arc<Table>,
    pub(super) source: IpAddr,
    pub(super) id: u64,
    pub(super) slot: Arc<Slot>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.remove(&self.source, self.id);
    }
}
