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

/// Read a global the agent set before load. `read_volatile` keeps the compiler from
/// folding the placeholder value in; the verifier sees the frozen value.
#[inline(always)]
pub(crate) fn global<T: Copy>(g: &T) -> T {
    unsafe { core::ptr::read_volatile(g) }
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
