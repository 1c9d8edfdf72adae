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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
