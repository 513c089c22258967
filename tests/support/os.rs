//! What the process holds, read from `/proc/self` (Linux): file descriptors, their limit, and
//! resident memory. A test that measures these measures the whole process, so it gets a test
//! file to itself.

/// How many more descriptors than its baseline a process-wide count may show. Both counts
/// are taken in the same quiet state (warmed up, nothing in flight), so the expected
/// difference is exactly 0. The tolerance only absorbs a descriptor or two that a runtime or
/// the standard library may open lazily once per process; any leak tied to the load (even
/// one descriptor per hundred connections) is far above it.
pub const FD_TOLERANCE: usize = 2;

/// The number of file descriptors this process has open (the directory handle used to count
/// them included, at every call alike).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The soft `Max open files` limit of this process, from `/proc/self/limits`.
pub fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// This process's resident set size, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/self/status")
}
