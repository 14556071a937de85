//! `halley bench sweep`: a matrix of runs (user counts × intervals) against
//! one server, and the seed's chart of all of them.

use std::time::Duration;

use crate::report::Report;
use crate::run::{self, RunOptions};

pub struct SweepOptions {
    /// Everything but `users` and `interval`, which the matrix sets.
    pub base: RunOptions,
    pub users: Vec<usize>,
    pub intervals: Vec<Duration>,
}

/// Runs every point, in order (users outer, intervals inner: falling
/// intervals raise the load on one population). A point that fails is
/// reported and skipped, so one saturated point does not lose the others.
pub async fn sweep(options: SweepOptions) -> Vec<Report> {
    let mut reports = Vec::new();
    for &users in &options.users {
        for &interval in &options.intervals {
            let mut scenario = options.base.scenario.clone();
            scenario.users = users;
            scenario.interval = interval;
            eprintln!(
                "== sweep point: {users} users, interval {} ms",
                interval.as_secs_f64() * 1000.0
            );
            let point = RunOptions {
                scenario,
                processes: options.base.processes,
                server_pids: options.base.server_pids.clone(),
                redis_pid: options.base.redis_pid,
                drain_timeout: options.base.drain_timeout,
                connecting_at_once: options.base.connecting_at_once,
                admin_url: options.base.admin_url.clone(),
                worker_program: options.base.worker_program.clone(),
                worker_args: options.base.worker_args.clone(),
            };
            match run::run(point).await {
                Ok(report) => {
                    eprint!("{}", report.summary());
                    reports.push(report);
                }
                Err(error) => eprintln!("sweep point failed: {error:#}"),
            }
        }
    }
    reports
}
