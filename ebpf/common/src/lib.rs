//! Types shared by the kernel programs (`ebpf/programs`) and the agent.
//!
//! Every type that crosses the kernel/user boundary is `#[repr(C)]`, has no
//! implicit padding, and its size is asserted below so that a change on one
//! side cannot silently corrupt the other.
#![no_std]

pub mod syscalls;

/// The probe families: each is one module of kernel programs (`ebpf/programs/src/<name>.rs`)
/// and one module of the agent (`agent/src/family/<name>.rs`), spelled the same in every
/// layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Calls, bytes, errors and time of the data-path system calls.
    Syscalls,
    /// Process exits and forks: rows handed over when a process ends.
    Process,
    /// Scheduler context switches.
    Sched,
    /// Page-cache lookups, misses, faults and dirtied pages.
    Pagecache,
    /// Copies in the kernel's socket and pipe paths.
    Copies,
    /// io_uring operations, at their completion.
    Uring,
}

impl Family {
    /// Every family, in the order their probes are attached.
    pub const ALL: [Family; 6] = [
        Family::Syscalls,
        Family::Process,
        Family::Sched,
        Family::Pagecache,
        Family::Copies,
        Family::Uring,
    ];

    /// The family's one spelling: its modules, its probes' `family`, `--disable-families`.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Syscalls => "syscalls",
            Family::Process => "process",
            Family::Sched => "sched",
            Family::Pagecache => "pagecache",
            Family::Copies => "copies",
            Family::Uring => "uring",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Names of the maps, as the agent looks them up in the loaded object.
pub mod maps {
    pub const SYSCALL_INDEX: &str = "SYSCALL_INDEX";
    pub const SYSCALL_STATS: &str = "SYSCALL_STATS";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const INFLIGHT_SPILL: &str = "INFLIGHT_SPILL";
    pub const EXITED: &str = "EXITED";
    pub const WATCHED: &str = "WATCHED";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SCHED_STATS: &str = "SCHED_STATS";
    pub const PAGECACHE_STATS: &str = "PAGECACHE_STATS";
    pub const COPY_STATS: &str = "COPY_STATS";
    /// What is pinned (layout, build, generation) and where the agent's state is; written
    /// only by the agent.
    pub const PIN_META: &str = "PIN_META";
    /// The agent's own totals, saved each window in chunks (written only by the agent).
    pub const AGENT_STATE: &str = "AGENT_STATE";

    /// The maps a pinned agent keeps under bpffs: every map the programs and the agent
    /// share, so that a restarted agent continues from them.
    pub const PINNED: [&str; 12] = [
        SYSCALL_INDEX,
        SYSCALL_STATS,
        INFLIGHT,
        INFLIGHT_SPILL,
        EXITED,
        WATCHED,
        COUNTERS,
        SCHED_STATS,
        PAGECACHE_STATS,
        COPY_STATS,
        PIN_META,
        AGENT_STATE,
    ];
}

/// Names of the programs (15 characters at most: the kernel truncates longer names).
pub mod programs {
    pub const SYSCALLS_BTF_ENTER: &str = "syscalls_tpbtf";
    pub const SYSCALLS_ENTER: &str = "syscalls_enter";
    pub const SYSCALLS_EXIT: &str = "syscalls_exit";
    pub const SYSCALLS_TP_ENTER: &str = "syscalls_tp_ent";
    pub const SYSCALLS_TP_BTF_ENTER: &str = "syscalls_tp_enb";
    pub const SYSCALLS_TP_EXIT: &str = "syscalls_tp_ext";
    pub const SYSCALLS_TP_EXIT_REGS: &str = "syscalls_tp_exr";
    /// Programs on one syscall's exit tracepoint each, which read the call's array in
    /// user memory (iocbs, io_events, mmsghdrs): kept out of the shared exit programs.
    pub const SYSCALLS_IO_SUBMIT: &str = "syscalls_iosubm";
    pub const SYSCALLS_IO_GETEVENTS: &str = "syscalls_ioevts";
    pub const SYSCALLS_SENDMMSG: &str = "syscalls_sendmm";
    pub const SYSCALLS_RECVMMSG: &str = "syscalls_recvmm";
    pub const PROCESS_EXIT: &str = "process_exit";
    pub const PROCESS_FORK: &str = "process_fork";
    pub const SCHED_SWITCH: &str = "sched_switch";
    pub const SCHED_SWITCH_BTF: &str = "sched_switchbtf";
    pub const PAGECACHE_LOOKUP_TP: &str = "pagecache_get";
    pub const PAGECACHE_LOOKUP_FENTRY: &str = "pagecache_acc_f";
    pub const PAGECACHE_LOOKUP_KPROBE: &str = "pagecache_acc_k";
    pub const PAGECACHE_ADD_TP: &str = "pagecache_add";
    pub const PAGECACHE_ADD_FENTRY: &str = "pagecache_add_f";
    pub const PAGECACHE_ADD_KPROBE: &str = "pagecache_add_k";
    pub const PAGECACHE_FAULT_TP: &str = "pagecache_fault";
    pub const PAGECACHE_DIRTY_TP: &str = "pagecache_dirty";
    pub const PAGECACHE_DIRTY_BTF: &str = "pagecache_dirtb";
    pub const COPIES_SOCK_SEND_TP: &str = "copies_sk_send";
    pub const COPIES_SOCK_RECV_TP: &str = "copies_sk_recv";
    /// fexit programs on the protocols' sendmsg operations, one per function.
    pub const COPIES_SEND_INET: &str = "copies_snd_inet";
    pub const COPIES_SEND_INET6: &str = "copies_snd_in6";
    pub const COPIES_SEND_UNIX_STREAM: &str = "copies_snd_unst";
    pub const COPIES_SEND_UNIX_DGRAM: &str = "copies_snd_undg";
    pub const COPIES_SOCK_RECV_FEXIT: &str = "copies_sk_rcv_f";
    pub const COPIES_SOCK_SEND_KRET: &str = "copies_sk_snd_k";
    pub const COPIES_SOCK_RECV_KRET: &str = "copies_sk_rcv_k";
    pub const COPIES_FILE_FEXIT: &str = "copies_file_f";
    pub const COPIES_FILE_KRET: &str = "copies_file_k";
    pub const COPIES_PIPE_READ_FEXIT: &str = "copies_pipe_r_f";
    pub const COPIES_PIPE_READ_KRET: &str = "copies_pipe_r_k";
    pub const COPIES_PIPE_WRITE_FEXIT: &str = "copies_pipe_w_f";
    pub const COPIES_PIPE_WRITE_KRET: &str = "copies_pipe_w_k";
    pub const URING_COMPLETE: &str = "uring_complete";
}

/// Names of the read-only globals the agent fills in before loading.
pub mod globals {
    pub const OFF_TASK_FILES: &str = "OFF_TASK_FILES";
    pub const OFF_TASK_TGID: &str = "OFF_TASK_TGID";
    pub const OFF_TASK_PID: &str = "OFF_TASK_PID";
    /// `task_struct.group_leader` and `.comm`: an exited process's name is its leader's.
    pub const OFF_TASK_GROUP_LEADER: &str = "OFF_TASK_GROUP_LEADER";
    pub const OFF_TASK_COMM: &str = "OFF_TASK_COMM";
    pub const OFF_FILES_FDT: &str = "OFF_FILES_FDT";
    pub const OFF_FDT_MAX_FDS: &str = "OFF_FDT_MAX_FDS";
    pub const OFF_FDT_FD: &str = "OFF_FDT_FD";
    pub const OFF_FILE_INODE: &str = "OFF_FILE_INODE";
    pub const OFF_FILE_FLAGS: &str = "OFF_FILE_FLAGS";
    pub const OFF_INODE_MODE: &str = "OFF_INODE_MODE";
    /// `inode.i_rdev`: which character device (null and zero copy nothing).
    pub const OFF_INODE_RDEV: &str = "OFF_INODE_RDEV";
    /// Offsets of the first three syscall argument registers in `struct pt_regs`.
    pub const OFF_REGS_ARG0: &str = "OFF_REGS_ARG0";
    pub const OFF_REGS_ARG1: &str = "OFF_REGS_ARG1";
    pub const OFF_REGS_ARG2: &str = "OFF_REGS_ARG2";
    /// The fourth argument register (io_getevents' events).
    pub const OFF_REGS_ARG3: &str = "OFF_REGS_ARG3";
    /// `enum bpf_func_id`'s BPF_FUNC_task_pt_regs (5.15+): set only when the kernel has
    /// the helper the per-syscall array readers (io_submit, io_getevents, sendmmsg,
    /// recvmmsg) take the call's arguments from.
    pub const FUNC_TASK_PT_REGS: &str = "FUNC_TASK_PT_REGS";
    /// At syscall exit: the syscall number and the first argument (on arm64 `regs[0]`
    /// holds the return value by then; the argument is kept in `orig_x0`).
    pub const OFF_REGS_NR: &str = "OFF_REGS_NR";
    pub const OFF_REGS_EXIT_ARG0: &str = "OFF_REGS_EXIT_ARG0";
    /// `syscalls:sys_enter_*` / `sys_exit_*` record layout (fallback method).
    pub const OFF_TP_NR: &str = "OFF_TP_NR";
    pub const OFF_TP_ARGS: &str = "OFF_TP_ARGS";
    pub const OFF_TP_RET: &str = "OFF_TP_RET";
    pub const OFF_TP_EXIT_NR: &str = "OFF_TP_EXIT_NR";
    /// `sched:sched_process_exit` record layout.
    pub const OFF_EXIT_GROUP_DEAD: &str = "OFF_EXIT_GROUP_DEAD";
    /// `sched:sched_switch` record layout.
    pub const OFF_SWITCH_PREV_STATE: &str = "OFF_SWITCH_PREV_STATE";
    /// BTF-typed sched_switch: 1 when the tracepoint passes `prev_state` (5.18+), else the
    /// state is read from `task_struct.__state` (`state` before 5.14) at this offset.
    pub const SWITCH_STATE_ARG: &str = "SWITCH_STATE_ARG";
    pub const OFF_TASK_STATE: &str = "OFF_TASK_STATE";
    /// `filemap:mm_filemap_get_pages`: first and last page index of a buffered read.
    pub const OFF_GETPAGES_INDEX: &str = "OFF_GETPAGES_INDEX";
    pub const OFF_GETPAGES_LAST: &str = "OFF_GETPAGES_LAST";
    pub const OFF_GETPAGES_INO: &str = "OFF_GETPAGES_INO";
    /// `filemap:mm_filemap_add_to_page_cache`: folio order (0: no such field, one page).
    pub const OFF_ADD_ORDER: &str = "OFF_ADD_ORDER";
    /// `filemap:mm_filemap_add_to_page_cache`: inode number and folio index.
    pub const OFF_ADD_INO: &str = "OFF_ADD_INO";
    pub const OFF_ADD_INDEX: &str = "OFF_ADD_INDEX";
    /// `writeback:writeback_dirty_folio` (`_page` before 5.17): inode number and index.
    pub const OFF_DIRTY_INO: &str = "OFF_DIRTY_INO";
    pub const OFF_DIRTY_INDEX: &str = "OFF_DIRTY_INDEX";
    /// `struct folio` from BTF, for the BTF-typed dirty program: flags, the head-page
    /// flag's bit, the page count of a large folio (0: not in BTF, count one page), and
    /// the index; `address_space.host` and `inode.i_ino` for the inode number.
    pub const OFF_FOLIO_FLAGS: &str = "OFF_FOLIO_FLAGS";
    pub const FOLIO_HEAD_BIT: &str = "FOLIO_HEAD_BIT";
    pub const OFF_FOLIO_NR_PAGES: &str = "OFF_FOLIO_NR_PAGES";
    pub const OFF_FOLIO_INDEX: &str = "OFF_FOLIO_INDEX";
    pub const OFF_MAPPING_HOST: &str = "OFF_MAPPING_HOST";
    pub const OFF_INODE_INO: &str = "OFF_INODE_INO";
    /// `sock:sock_send_length` / `sock_recv_length`: return value and msg flags.
    pub const OFF_SOCKLEN_RET: &str = "OFF_SOCKLEN_RET";
    pub const OFF_SOCKLEN_FLAGS: &str = "OFF_SOCKLEN_FLAGS";
    /// `io_uring:io_uring_complete`: the request, its result and CQE flags.
    pub const OFF_URING_CPL_REQ: &str = "OFF_URING_CPL_REQ";
    pub const OFF_URING_CPL_RES: &str = "OFF_URING_CPL_RES";
    pub const OFF_URING_CPL_CFLAGS: &str = "OFF_URING_CPL_CFLAGS";
    /// `struct io_kiocb`: the request's opcode and file.
    pub const OFF_KIOCB_OPCODE: &str = "OFF_KIOCB_OPCODE";
    pub const OFF_KIOCB_FILE: &str = "OFF_KIOCB_FILE";
    /// Nonzero: kernel-side diagnostics through aya-log.
    pub const DEBUG_LOG: &str = "DEBUG_LOG";
    /// Nonzero: only processes in `WATCHED` are counted.
    pub const WATCH_ONLY: &str = "WATCH_ONLY";
    /// Test-only: which required probe's programs make the verifier reject them
    /// ([`crate::test_reject`]).
    pub const TEST_REJECT: &str = "TEST_REJECT";
}

/// The kinds of reason (`copyscope probes --json`, `reason`) that name a kernel feature
/// the kernel lacks: the only reasons a kernel test may skip for. Every other kind is a
/// fault in copyscope or in how it was run.
pub mod reasons {
    pub const MISSING_FEATURE: &[&str] = &[
        "no_btf",
        "kernel_too_old",
        "no_tracepoint",
        "no_kprobes",
        "no_trampoline",
        "not_in_kernel",
    ];
}

/// Values of the `TEST_REJECT` global: the required probe whose programs do a load the
/// verifier refuses, so that the test tiers can prove a rejected program fails them.
pub mod test_reject {
    pub const NONE: u8 = 0;
    pub const SYSCALLS_ENTER: u8 = 1;
    pub const SYSCALLS_EXIT: u8 = 2;
    pub const PROCESS_EXIT: u8 = 3;
}

/// Sizes of the maps. Every map is bounded; what does not fit is counted in `COUNTERS`.
pub mod limits {
    /// Distinct (process, syscall, fd kinds) triples held in the kernel between two harvests.
    pub const SYSCALL_STATS_ENTRIES: u32 = 32_768;
    /// Slots for syscalls in flight, indexed by thread id (a power of two).
    pub const INFLIGHT_SLOTS: u32 = 65_536;
    /// Overflow for in-flight syscalls whose slot is taken by another live thread.
    pub const INFLIGHT_SPILL_ENTRIES: u32 = 16_384;
    /// Processes that exited since the last harvest.
    pub const EXITED_ENTRIES: u32 = 16_384;
    /// Processes followed by `snapshot -- COMMAND`.
    pub const WATCHED_ENTRIES: u32 = 16_384;
    /// Processes with sched, page-cache or copy counts between two harvests (per map).
    pub const PROC_STATS_ENTRIES: u32 = 16_384;
    /// Highest syscall number the index map covers.
    pub const SYSCALL_NR_MAX: u32 = 1024;
    /// Bytes of one chunk of the agent's saved state.
    pub const STATE_CHUNK: usize = 32_768;
    /// Chunks in `AGENT_STATE`: two copies of at most half as many chunks (16 MiB each).
    pub const STATE_ENTRIES: u32 = 1024;
}

/// Version of everything pinned under bpffs: the maps' key and value layouts, their
/// meaning, and `PinMeta`. A pin of another version is never reused. Raise it with any
/// such change.
pub const PIN_LAYOUT: u32 = 3;

/// `PIN_META[0]`, written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinMeta {
    /// `PinMeta::MAGIC` once written.
    pub magic: u64,
    /// [`PIN_LAYOUT`] of the agent that created the pin.
    pub layout: u32,
    /// Bumped each time the programs are replaced; links live under `links/<generation>`.
    pub generation: u32,
    /// Hash of the programs' object and of everything handed to them at load time: an
    /// agent with the same hash adopts the attached programs instead of replacing them.
    pub build: u64,
    /// Which copy of the state is current (0 or 1), its length (0: none) and CRC-32.
    pub state_copy: u32,
    pub state_len: u32,
    pub state_crc: u32,
    pub _pad: u32,
    /// When the state was written (Unix nanoseconds).
    pub state_unix_ns: u64,
}

impl PinMeta {
    pub const MAGIC: u64 = u64::from_le_bytes(*b"cpyscope");
}

/// Indices into the per-CPU `COUNTERS` array: what the kernel side had to drop.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A syscall could not be counted because `SYSCALL_STATS` was full.
    StatsFull = 0,
    /// A syscall in flight used the spill map because its slot was taken.
    InflightSpilled = 1,
    /// A syscall in flight could not be tracked at all (spill map full): not counted.
    InflightLost = 2,
    /// An exited process could not be recorded (`EXITED` full): its comm is lost.
    ExitedFull = 3,
    /// A child of a watched process could not be watched (`WATCHED` full).
    WatchedFull = 4,
    /// A process's sched, page-cache or copy counts could not be kept (map full).
    ProcStatsFull = 5,
    /// A counted syscall whose enter run the kernel skipped: counted at its exit, with
    /// its time unknown (0 ns).
    TimeUnknown = 6,
    /// A counted syscall whose exit run the kernel skipped: counted as a call, with its
    /// bytes and time unknown (0).
    BytesUnknown = 7,
    /// An io_submit iocb past the first 64 of a call (its operation and bytes are not
    /// counted; the call itself is), or an io_getevents event past the first 64 (its
    /// bytes are not counted).
    AioUnread = 8,
    /// A sendmmsg or recvmmsg message past the first 64 of a call: its bytes are not
    /// counted (the call and the message are).
    MmsgUnread = 9,
}

impl Counter {
    pub const COUNT: u32 = 10;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::StatsFull,
        Counter::InflightSpilled,
        Counter::InflightLost,
        Counter::ExitedFull,
        Counter::WatchedFull,
        Counter::ProcStatsFull,
        Counter::TimeUnknown,
        Counter::BytesUnknown,
        Counter::AioUnread,
        Counter::MmsgUnread,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Counter::StatsFull => "syscall_stats_full",
            Counter::InflightSpilled => "inflight_spilled",
            Counter::InflightLost => "inflight_lost",
            Counter::ExitedFull => "exited_full",
            Counter::WatchedFull => "watched_full",
            Counter::ProcStatsFull => "process_stats_full",
            Counter::TimeUnknown => "syscall_time_unknown",
            Counter::BytesUnknown => "syscall_bytes_unknown",
            Counter::AioUnread => "aio_entries_unread",
            Counter::MmsgUnread => "mmsg_messages_unread",
        }
    }
}

/// What an fd referred to at the moment of the call.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FdKind {
    /// No fd (single-fd syscall's second end).
    None = 0,
    /// Regular file, buffered (through the page cache).
    File = 1,
    /// Regular file opened with O_DIRECT.
    FileDirect = 2,
    Socket = 3,
    /// Pipe or FIFO.
    Pipe = 4,
    /// Anything else, including fds that were not open.
    Other = 5,
    /// /dev/null, /dev/zero or /dev/full: memory devices that move no data through a
    /// copy (a write is discarded, a read fills the buffer with zeros).
    Null = 6,
}

impl FdKind {
    pub const fn from_u8(v: u8) -> FdKind {
        match v {
            1 => FdKind::File,
            2 => FdKind::FileDirect,
            3 => FdKind::Socket,
            4 => FdKind::Pipe,
            5 => FdKind::Other,
            6 => FdKind::Null,
            _ => FdKind::None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            FdKind::None => "none",
            FdKind::File => "file",
            FdKind::FileDirect => "file_direct",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Other => "other",
            FdKind::Null => "null",
        }
    }
    /// How many kinds there are (for arrays indexed by kind).
    pub const COUNT: usize = 7;
    /// Whether the inode is a character device that needs its device number
    /// ([`FdKind::classify_device`]) to be told apart.
    pub const fn is_char_device(i_mode: u16) -> bool {
        i_mode & 0o170000 == 0o020000
    }
    /// A character device from its kernel-internal device number (`inode->i_rdev`,
    /// `MKDEV(major, minor) = major << 20 | minor`): major 1 is the memory devices, of which
    /// null (3), zero (5) and full (7) copy nothing.
    pub const fn classify_device(i_rdev: u32) -> FdKind {
        const MEM_MAJOR: u32 = 1;
        match (i_rdev >> 20, i_rdev & 0xfffff) {
            (MEM_MAJOR, 3 | 5 | 7) => FdKind::Null,
            _ => FdKind::Other,
        }
    }
    /// Classify from `inode->i_mode` and `file->f_flags`.
    pub const fn classify(i_mode: u16, f_flags: u32) -> FdKind {
        const S_IFMT: u16 = 0o170000;
        const S_IFREG: u16 = 0o100000;
        const S_IFSOCK: u16 = 0o140000;
        const S_IFIFO: u16 = 0o010000;
        match i_mode & S_IFMT {
            S_IFREG if f_flags & O_DIRECT != 0 => FdKind::FileDirect,
            S_IFREG => FdKind::File,
            S_IFSOCK => FdKind::Socket,
            S_IFIFO => FdKind::Pipe,
            _ => FdKind::Other,
        }
    }
}

/// `O_DIRECT` in `file->f_flags` on the kernel these programs run on. Its value is not
/// the same everywhere: include/uapi/asm-generic/fcntl.h has 0o40000, which on arm64 is
/// O_DIRECTORY (arch/arm64/include/uapi/asm/fcntl.h: O_DIRECT 0o200000). The kernel
/// programs are built for one architecture (aya-build sets `bpf_target_arch`); the agent's
/// own build reads its `target_arch`.
#[cfg(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
))]
pub const O_DIRECT: u32 = 0o200000;
/// `O_DIRECT` in `file->f_flags` (see the arm64 value above).
#[cfg(not(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
)))]
pub const O_DIRECT: u32 = 0o40000;

/// Key of `SYSCALL_STATS` (a hash shared by every CPU): one row per process, syscall and fd kinds.
#[repr(C)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    /// Process (thread group) id, as the initial pid namespace sees it.
    pub tgid: u32,
    /// Index into [`syscalls::SYSCALLS`].
    pub syscall: u8,
    /// [`FdKind`] of the input end (the only end for one-fd calls).
    pub fd_in: u8,
    /// [`FdKind`] of the output end of two-fd calls, else `FdKind::None`.
    pub fd_out: u8,
    pub _pad: u8,
}

/// Value of `SYSCALL_STATS`, counted with atomic adds.
#[repr(C)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallStats {
    pub calls: u64,
    /// Sum of non-negative return values.
    pub bytes: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    /// Nanoseconds between sys_enter and sys_exit.
    pub nanos: u64,
}

/// A syscall in flight, from sys_enter to sys_exit of one thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Inflight {
    /// Thread id; 0 when the slot is free.
    pub tid: u32,
    pub syscall: u8,
    pub fd_in: u8,
    pub fd_out: u8,
    pub _pad: u8,
    pub start_ns: u64,
    /// The file (inode number; 0: none yet) and the last page index this call's page-cache
    /// lookups covered: filemap_get_pages() runs again for the rest of a range after it
    /// waited for readahead, and pages already counted in this call are not counted twice.
    pub lookup_ino: u64,
    pub lookup_end: u64,
}

/// Value of `EXITED`: a process whose last thread exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Exited {
    pub comm: [u8; 16],
    pub exit_ns: u64,
    /// The process's cgroup v2 id at its exit (bpf_get_current_cgroup_id(); the unified
    /// hierarchy on hybrid hosts): its container once /proc has forgotten it.
    pub cgroup_id: u64,
}

/// Value of `SCHED_STATS` (by tgid, atomic adds): context switches from sched_switch.
#[repr(C)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// The task blocked (prev_state not running).
    pub voluntary: u64,
    /// The task was preempted while runnable.
    pub involuntary: u64,
    /// Switches while the task was inside a counted I/O syscall.
    pub in_io: u64,
}

/// Value of `PAGECACHE_STATS` (by tgid, atomic adds): page-cache activity caused by the process.
#[repr(C)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagecacheStats {
    /// Pages looked up by buffered reads (or folio accesses, by the fallback methods).
    pub lookups: u64,
    /// Pages added to the cache (a folio of order n is 2^n pages), by reads, their
    /// readahead and faults, and by writes.
    pub added: u64,
    /// Of `added`, the pages a write added: a folio the same thread dirtied right after
    /// adding it, in the same system call. `added - write_added` are the read misses.
    pub write_added: u64,
    /// Page faults on file mappings served through the page cache.
    pub mmap_faults: u64,
    /// Pages dirtied by writes (a large folio counts its pages).
    pub dirtied: u64,
}

/// Value of `COPY_STATS` (by tgid, atomic adds): bytes the CPU copied, at their source.
#[repr(C)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Page cache -> user (filemap_read).
    pub file_to_user: u64,
    /// Socket -> user (sock_recvmsg).
    pub socket_to_user: u64,
    /// User -> socket (sock_sendmsg, not MSG_SPLICE_PAGES / MSG_ZEROCOPY).
    pub socket_from_user: u64,
    /// Pipe -> user (pipe_read).
    pub pipe_to_user: u64,
    /// User -> pipe (pipe_write).
    pub pipe_from_user: u64,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::SchedStats {}
    unsafe impl aya::Pod for super::PagecacheStats {}
    unsafe impl aya::Pod for super::CopyStats {}
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::SyscallStats {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::Exited {}
    unsafe impl aya::Pod for super::PinMeta {}
}

const _: () = assert!(core::mem::size_of::<SyscallKey>() == 8);
const _: () = assert!(core::mem::size_of::<SyscallStats>() == 32);
const _: () = assert!(core::mem::size_of::<Inflight>() == 32);
const _: () = assert!(core::mem::size_of::<Exited>() == 32);
const _: () = assert!(core::mem::size_of::<SchedStats>() == 24);
const _: () = assert!(core::mem::size_of::<PagecacheStats>() == 40);
const _: () = assert!(core::mem::size_of::<CopyStats>() == 40);
const _: () = assert!(core::mem::size_of::<PinMeta>() == 48);
const _: () = assert!(limits::INFLIGHT_SLOTS.is_power_of_two());
