//! Tracepoint record layouts from tracefs `format` files (field offsets differ across
//! kernels), and locating or mounting tracefs.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u64,
    pub size: u64,
}

/// Parse a `format` file: field name -> offset and size.
pub fn parse_format(text: &str) -> Result<HashMap<String, Field>> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = Some(
                    v.trim()
                        .parse::<u64>()
                        .with_context(|| format!("bad offset in {line:?}"))?,
                );
            } else if let Some(v) = part.strip_prefix("size:") {
                size = Some(
                    v.trim()
                        .parse::<u64>()
                        .with_context(|| format!("bad size in {line:?}"))?,
                );
            } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            bail!("malformed field line {line:?}");
        };
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or(decl);
        let name = name.split('[').next().unwrap_or(name);
        if name.is_empty() {
            bail!("field without a name in {line:?}");
        }
        fields.insert(name.to_string(), Field { offset, size });
    }
    if fields.is_empty() {
        bail!("no fields in tracepoint format");
    }
    Ok(fields)
}

/// The tracefs root: /sys/kernel/tracing, else /sys/kernel/debug/tracing. If neither is
/// mounted, mount tracefs at /sys/kernel/tracing (root only).
pub fn root() -> Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with constant C strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && Path::new("/sys/kernel/tracing/events").is_dir() {
        log::info!("mounted tracefs at /sys/kernel/tracing");
        return Ok(PathBuf::from("/sys/kernel/tracing"));
    }
    bail!(
        "tracefs is not mounted and could not be mounted ({}): run `mount -t tracefs nodev /sys/kernel/tracing` as root",
        std::io::Error::last_os_error()
    )
}

/// Read and parse the format of `category:name`; `Ok(None)` if the tracepoint does not exist.
pub fn format(root: &Path, category: &str, name: &str) -> Result<Option<HashMap<String, Field>>> {
    let path = root.join("events").join(category).join(name).join("format");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_format(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_PREAD64: &str = "name: sys_enter_pread64
ID: 838
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;
\tfield:loff_t pos;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx\", ((unsigned long)(REC->fd))
";

    const SCHED_PROCESS_EXIT: &str = "name: sched_process_exit
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

    #[test]
    fn parses_syscall_enter_layout() {
        let f = parse_format(SYS_ENTER_PREAD64).unwrap();
        assert_eq!(f["__syscall_nr"], Field { offset: 8, size: 4 });
        assert_eq!(
            f["fd"],
            Field {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(
            f["buf"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(f["pos"].offset, 40);
    }

    #[test]
    fn parses_arrays_and_bools() {
        let f = parse_format(SCHED_PROCESS_EXIT).unwrap();
        assert_eq!(
            f["comm"],
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            f["group_dead"],
            Field {
                offset: 32,
                size: 1
            }
        );
    }

    #[test]
    fn rejects_malformed_formats() {
        assert!(parse_format("").is_err());
        assert!(parse_format("field:int x;\toffset:abc;\tsize:4;").is_err());
        assert!(parse_format("field:int x;\tsize:4;").is_err());
    }
}
