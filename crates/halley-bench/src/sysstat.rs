//! CPU time, resident memory and open files of a process, from Linux's `/proc`.
//!
//! Both sides of a benchmark share the machine's cores, so a report shows
//! the CPU each used; memory per connected client is the server's RSS growth
//! divided by the clients connected. A cluster's figures are the sums over
//! its node processes ([`total`]).

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

/// Files `pid` holds open (its sockets among them): the entries of
/// `/proc/<pid>/fd`, readable for a process of the same user.
pub fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// Busy CPU time of the whole machine so far (every core: user, nice,
/// system, irq, softirq, steal), from `/proc/stat`: what the machine spent
/// in a window, minus what the benchmark's own processes spent, is what
/// anything else running on it took (other builds, other tests).
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_of_stat_line(stat.lines().next()?)
}

fn busy_of_stat_line(line: &str) -> Option<Duration> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<f64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already
    // counted in user and nice).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Some(Duration::from_secs_f64(busy / USER_HZ))
}

/// The machine's 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The total of one reading per process: `None` when there is no process or
/// any reading failed (a node that died mid-run must not make the cluster
/// look cheaper than it was).
pub fn total<T: std::iter::Sum<T>>(readings: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let readings: Option<Vec<T>> = readings.into_iter().collect();
    readings
        .filter(|r| !r.is_empty())
        .map(|r| r.into_iter().sum())
}

/// CPU time consumed by each of `pids` between two readings, in seconds
/// (`None` for a process that could not be read either time).
pub fn cpu_deltas(before: &[Option<Duration>], after: &[Option<Duration>]) -> Vec<Option<f64>> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => Some(a.saturating_sub(*b).as_secs_f64()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        // user 100, nice 10, system 50, idle 9000, iowait 40, irq 1, softirq 2, steal 7, guest 0 0
        let line = "cpu  100 10 50 9000 40 1 2 7 0 0";
        assert_eq!(busy_of_stat_line(line), Some(Duration::from_secs_f64(1.7)));
        assert_eq!(busy_of_stat_line("cpu0 1 2 3 4"), None, "one core's line");
        assert!(machine_busy().is_some());
        assert!(load_average().unwrap()[0] >= 0.0);
    }

    #[test]
    fn a_total_is_the_sum_of_every_reading_or_nothing() {
        assert_eq!(total([Some(1.5), Some(2.0), Some(0.5)]), Some(4.0));
        assert_eq!(total([Some(3u64)]), Some(3));
        assert_eq!(total([Some(1u64), None, Some(2)]), None, "a lost node");
        assert_eq!(total(Vec::<Option<u64>>::new()), None, "no server pid");
    }

    #[test]
    fn cpu_deltas_are_per_process() {
        let s = Duration::from_secs;
        let before = [Some(s(10)), Some(s(20)), None];
        let after = [Some(s(13)), Some(s(21)), Some(s(5))];
        assert_eq!(
            cpu_deltas(&before, &after),
            vec![Some(3.0), Some(1.0), None]
        );
        assert_eq!(total(cpu_deltas(&before[..2], &after[..2])), Some(4.0));
    }

    #[test]
    fn this_process_read_twice_totals_twice_its_memory() {
        let pid = std::process::id();
        let one = rss_bytes(Some(pid)).expect("linux /proc");
        let two = total([rss_bytes(Some(pid)), rss_bytes(Some(pid))]).unwrap();
        // Memory may move a little between the readings; the sum is of both.
        assert!(two > one * 3 / 2 && two < one * 5 / 2, "{one} {two}");
    }

    /// The other tests of this process open and close files on their own
    /// threads meanwhile (CI saw 8 for 7 once): a few tries, one of which
    /// must see exactly one more file while it is open and none after.
    #[test]
    fn counts_the_files_a_process_holds() {
        let pid = std::process::id();
        let exact = (0..20).any(|_| {
            let before = open_fds(pid).expect("linux /proc");
            let file = std::fs::File::open("/proc/self/status").unwrap();
            let with = open_fds(pid);
            drop(file);
            with == Some(before + 1) && open_fds(pid) == Some(before)
        });
        assert!(exact, "never counted the one file opened and closed");
        assert_eq!(open_fds(u32::MAX), None, "no such process");
    }

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
