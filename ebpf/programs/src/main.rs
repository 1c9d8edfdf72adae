//! copyscope's kernel programs. One module per probe family; every program is a thin
//! entry that calls a `try_*` body. Kernel-struct and tracepoint-record offsets arrive
//! as read-only globals filled in by the agent (rustc emits no CO-RE relocations).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod copies;
mod maps;
mod pagecache;
mod process;
mod sched;
mod syscalls;
mod uring;

/// Read a global the agent set before load. `read_volatile` keeps the compiler from
/// folding the placeholder value in; the verifier sees the frozen value.
#[inline(always)]
pub(crate) fn global<T: Copy>(g: &T) -> T {
    unsafe { core::ptr::read_volatile(g) }
}

/// A field of a tracepoint record, at the offset tracefs gave (a global). The usual
/// offsets are plain loads from the context, which the verifier allows only from the
/// unmodified context pointer at a constant offset: it knows the frozen global and drops
/// every other branch. The loads are written in assembly so that the compiler cannot
/// turn them into one load from a computed pointer. Any other offset goes through
/// bpf_probe_read, as before.
#[inline(always)]
pub(crate) fn field<T: Copy + Default>(ctx: &aya_ebpf::programs::TracePointContext, off: u64) -> T {
    use aya_ebpf::EbpfContext as _;
    let c = ctx.as_ptr();
    let size = core::mem::size_of::<T>();
    macro_rules! load {
        ($ty:literal, $o:literal) => {{
            let v: u64;
            // SAFETY: the verifier checks a context load against the record's bounds.
            unsafe {
                core::arch::asm!(
                    concat!("{v} = *(", $ty, " *)({c} + ", $o, ")"),
                    v = out(reg) v,
                    c = in(reg) c,
                    options(readonly, nostack),
                )
            };
            v
        }};
    }
    macro_rules! direct {
        ($($o:literal)*) => {$(
            if off == $o && $o % size == 0 {
                let v: u64 = match size {
                    1 => load!("u8", $o),
                    2 => load!("u16", $o),
                    4 => load!("u32", $o),
                    _ => load!("u64", $o),
                };
                // Little-endian: T is the low bytes of the zero-extended load.
                return unsafe { core::mem::transmute_copy(&v) };
            }
        )*};
    }
    if size <= 8 {
        direct!(8 12 16 20 24 28 32 40 48 56);
    }
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

/// Test-only (`COPYSCOPE_TEST_REJECT`): which required probe's programs the verifier must
/// reject. 0 outside the guard test.
#[unsafe(no_mangle)]
static TEST_REJECT: u8 = 0;

/// When the agent names this program's probe in `TEST_REJECT`, read through a plain
/// number, a load the verifier refuses ("invalid mem access"). Otherwise the frozen global
/// makes the branch dead code, which the verifier removes before the program runs.
#[inline(always)]
pub(crate) fn rejected_when_asked(probe: u8) {
    if global(&TEST_REJECT) == probe {
        unsafe { core::ptr::read_volatile(64usize as *const u64) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
