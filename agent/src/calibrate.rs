//! Measure, at start-up, what zero-copy saves on this host: memory-copy bandwidth and
//! the cost of one system call. Well under a second; run before the probes attach, so the
//! syscall cost is the application's, not the application's plus copyscope's.

use std::time::Instant;

use crate::advisor::Calibration;

/// Buffers larger than the last-level cache of most servers, so the copy runs at memory
/// speed as the kernel's copies of streamed data do.
const BUF: usize = 32 << 20;

/// [`calibrate`] in a child process (`copyscope calibrate`, hidden), so that the two
/// 32 MiB buffers are never part of a long-running agent's own memory: its peak RSS
/// stays what collecting needs. In-process when the child cannot run or answer.
pub fn calibrate_apart() -> Calibration {
    let child = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("calibrate")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
    });
    match child {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(c) => return c,
            Err(e) => log::warn!("calibration child: {e}; measuring in this process"),
        },
        Ok(out) => log::warn!(
            "calibration child exited with {}; measuring in this process",
            out.status
        ),
        Err(e) => log::warn!("calibration child: {e}; measuring in this process"),
    }
    calibrate()
}

/// `copyscope calibrate`: the measurement as one JSON object on stdout.
pub fn print() -> anyhow::Result<i32> {
    println!("{}", serde_json::to_string(&calibrate())?);
    Ok(0)
}

pub fn calibrate() -> Calibration {
    Calibration {
        memcpy_bytes_per_second: memcpy_bandwidth(),
        syscall_seconds: syscall_cost(),
    }
}

/// Best of several copies of a 32 MiB buffer (the first touches the pages).
fn memcpy_bandwidth() -> f64 {
    let src = vec![0x5au8; BUF];
    let mut dst = vec![0u8; BUF];
    let mut best = f64::MAX;
    for _ in 0..6 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    BUF as f64 / best.max(1e-9)
}

/// Best per-call time of batches of getppid(2), the cheapest real system call (made
/// through syscall(2) so no C library can answer it from a cache).
fn syscall_cost() -> f64 {
    const N: u32 = 20_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..N {
            // SAFETY: getppid takes no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        best = best.min(t.elapsed().as_secs_f64() / N as f64);
    }
    best
}

#[cfg(test)]
mod tests {
    #[test]
    fn calibration_is_plausible() {
        let c = super::calibrate();
        // Any machine copyscope runs on copies between 100 MB/s and 1 TB/s and makes a
        // syscall in 10 ns to 100 us.
        assert!((1e8..1e12).contains(&c.memcpy_bytes_per_second), "{c:?}");
        assert!((1e-8..1e-4).contains(&c.syscall_seconds), "{c:?}");
    }
}
