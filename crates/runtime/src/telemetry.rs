//! Per-stage resource samples, taken from the host about once a second
//! while a stage's sandbox runs: CPU (percent of one core) and resident
//! memory of the sandbox's whole host process tree — the launcher tree of a
//! namespace sandbox, the QEMU process of a micro-VM (whose RSS is the
//! guest RAM it has touched plus QEMU's own). Host-side accounting costs
//! the guest nothing and cannot be faked by the agent.
//!
//! Samples are numbered per run (`seq`), kept in a bounded ring
//! ([`MAX_SAMPLES`]) and served by `GET /v1/runs/{id}/telemetry`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::live::LiveRun;
use crate::record::StageStatus;

/// Samples kept per run (older ones are dropped first).
pub const MAX_SAMPLES: usize = 7200;
/// Time between samples of one stage.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One resource sample of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    pub seq: u64,
    pub ts_ms: u64,
    pub stage_name: String,
    /// CPU used since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of the sandbox's host process tree.
    pub memory_bytes: u64,
    /// Host processes in the tree.
    pub processes: u32,
}

/// A page of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    pub next_seq: u64,
    pub samples: Vec<Sample>,
}

/// The samples of one run.
#[derive(Debug, Default)]
pub struct Telemetry {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    samples: VecDeque<Sample>,
}

impl Telemetry {
    /// A store that continues after `samples` (e.g. loaded from disk).
    pub fn from_samples(samples: Vec<Sample>) -> Self {
        let next_seq = samples.last().map_or(0, |s| s.seq + 1);
        Telemetry {
            inner: Mutex::new(Ring {
                next_seq,
                samples: samples.into(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, stage: &str, cpu_percent: f64, memory_bytes: u64, processes: u32) {
        let mut r = self.lock();
        let seq = r.next_seq;
        r.next_seq += 1;
        r.samples.push_back(Sample {
            seq,
            ts_ms: now_ms(),
            stage_name: stage.to_string(),
            cpu_percent,
            memory_bytes,
            processes,
        });
        while r.samples.len() > MAX_SAMPLES {
            r.samples.pop_front();
        }
    }

    /// Samples with `seq >= from_seq`, of `stage` when given; `next_seq` is
    /// what to ask for next time.
    pub fn page(&self, from_seq: u64, stage: Option<&str>) -> Page {
        let r = self.lock();
        let samples = r
            .samples
            .iter()
            .filter(|s| s.seq >= from_seq && stage.is_none_or(|st| s.stage_name == st))
            .cloned()
            .collect();
        Page {
            next_seq: r.next_seq.max(from_seq),
            samples,
        }
    }

    /// Every sample kept.
    pub fn all(&self) -> Vec<Sample> {
        self.lock().samples.iter().cloned().collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples `pid`'s process tree for `stage` until dropped.
pub struct Sampler(tokio::task::JoinHandle<()>);

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whom a sandbox's samples are about.
#[derive(Clone)]
pub enum Label {
    /// One stage owns the sandbox.
    Stage(String),
    /// A workflow's steps share one sandbox: each running step gets the
    /// sandbox-wide sample.
    RunningSteps(Arc<LiveRun>),
}

impl Label {
    fn stages(&self) -> Vec<String> {
        match self {
            Label::Stage(s) => vec![s.clone()],
            Label::RunningSteps(live) => live
                .snapshot()
                .stage_states
                .into_iter()
                .filter(|(_, s)| *s == StageStatus::Running)
                .map(|(n, _)| n)
                .collect(),
        }
    }
}

/// Starts sampling (nothing when the sandbox has no host pid).
pub fn start(tel: &Arc<Telemetry>, label: Label, pid: Option<u32>) -> Option<Sampler> {
    let pid = pid?;
    let tel = tel.clone();
    Some(Sampler(tokio::spawn(async move {
        let mut prev: Option<(Instant, u64)> = None;
        loop {
            // /proc reads are quick but still file I/O: off the runtime's
            // worker threads.
            let Ok(Some(usage)) = tokio::task::spawn_blocking(move || tree_usage(pid)).await else {
                return;
            };
            let now = Instant::now();
            let cpu = match prev {
                Some((t, ticks)) => {
                    let secs = now.duration_since(t).as_secs_f64().max(1e-3);
                    let used = usage.cpu_ticks.saturating_sub(ticks) as f64 / ticks_per_second();
                    (used / secs * 100.0 * 10.0).round() / 10.0
                }
                None => 0.0,
            };
            for stage in label.stages() {
                tel.push(&stage, cpu, usage.rss_bytes, usage.processes);
            }
            prev = Some((now, usage.cpu_ticks));
            tokio::time::sleep(INTERVAL).await;
        }
    })))
}

/// What a process tree uses.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub processes: u32,
}

/// Sums CPU ticks (user + system, including reaped children) and RSS of
/// `root` and its descendants; `None` when `root` is gone.
pub fn tree_usage(root: u32) -> Option<Usage> {
    let parents = parent_map();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, stat) in &parents {
        children.entry(stat.ppid).or_default().push(*pid);
    }
    parents.get(&root)?;
    let mut usage = Usage::default();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(s) = parents.get(&pid) {
            usage.cpu_ticks += s.ticks;
            usage.rss_bytes += s.rss_pages * page_size();
            usage.processes += 1;
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    Some(usage)
}

struct ProcStat {
    ppid: u32,
    ticks: u64,
    rss_pages: u64,
}

fn parent_map() -> HashMap<u32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(s) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(pid, s);
        }
    }
    out
}

/// Fields of `/proc/PID/stat` after the parenthesised command name (which
/// may itself hold spaces and parentheses): state ppid … utime(14)
/// stime(15) cutime(16) cstime(17) … rss(24).
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        ppid: num(4)? as u32,
        ticks: num(14)? + num(15)? + num(16)? + num(17)?,
        rss_pages: num(24)?,
    })
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_pages_and_filters() {
        let t = Telemetry::default();
        t.push("a", 1.0, 10, 1);
        t.push("b", 2.0, 20, 1);
        t.push("a", 3.0, 30, 2);
        let p = t.page(0, None);
        assert_eq!(p.next_seq, 3);
        assert_eq!(p.samples.len(), 3);
        let p = t.page(1, Some("a"));
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].memory_bytes, 30);
        let p = t.page(u64::MAX, None);
        assert!(p.samples.is_empty());
        assert_eq!(p.next_seq, u64::MAX);
        for _ in 0..MAX_SAMPLES {
            t.push("a", 0.0, 0, 1);
        }
        assert_eq!(t.all().len(), MAX_SAMPLES);
        assert_eq!(t.page(0, None).samples[0].seq, 3);
    }

    #[test]
    fn stat_with_odd_command_names() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 5 1000 99 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 7);
        assert_eq!(s.ticks, 11 + 22 + 33 + 44);
        assert_eq!(s.rss_pages, 99);
    }

    #[test]
    fn own_tree_is_measured() {
        let u = tree_usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.processes >= 1);
        assert!(tree_usage(u32::MAX).is_none());
    }
}
