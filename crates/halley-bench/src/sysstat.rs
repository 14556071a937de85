//! CPU time and resident memory of a process, from Linux's `/proc`.
//!
//! Both sides of a benchmark share the machine's cores, so a report shows
//! the CPU each used; memory per connected client is the server's RSS growth
//! divided by the clients connected.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on every Linux
/// configuration Halley runs on (USER_HZ is fixed by the kernel ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU time consumed so far by `pid` (`None`: this process).
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) is index 11.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / USER_HZ))
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = cpu_time(None).expect("linux /proc");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(None).unwrap() >= before);
        assert!(rss_bytes(None).unwrap() > 1024 * 1024);
    }
}
