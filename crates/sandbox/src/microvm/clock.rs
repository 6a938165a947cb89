//! The guest clock under TCG.
//!
//! The `microvm` machine has no HPET and no ACPI PM timer, so the guest
//! kernel calibrates its TSC against the PIT, in a timing window that TCG
//! emulation often misses. It then marks the TSC unstable and, with no
//! other clocksource, hangs in the delay-loop calibration — seen here on
//! about half of all boots. Under TCG the guest's TSC is the host's TSC, so
//! husk measures the host's TSC rate once and hands it to the kernel
//! (`tsc_early_khz=`, `tsc=reliable`): no calibration, no hang, and ~1 s
//! less boot time. Under KVM the guest uses kvm-clock and none of this
//! applies.
//!
//! Measuring takes ~30 ms, paid by every `husk exec` that starts a VM, so
//! the rate is cached on disk per host boot (like the KVM verdict): the
//! host's TSC rate does not change until it reboots.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Kernel arguments that pin the guest's TSC rate (empty when the host's
/// rate cannot be measured).
pub fn tcg_kernel_args() -> String {
    static ARGS: OnceLock<String> = OnceLock::new();
    ARGS.get_or_init(|| {
        let boot_id =
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        match cached_khz(&super::probe_cache_dir(), boot_id.trim(), host_tsc_khz) {
            Some(khz) => format!(" tsc_early_khz={khz} tsc=reliable"),
            None => String::new(),
        }
    })
    .clone()
}

/// The rate cached in `dir` for this host boot, else `measure()`'s
/// (cached when plausible). Without a boot id nothing is cached.
fn cached_khz(dir: &Path, boot_id: &str, measure: impl FnOnce() -> Option<u64>) -> Option<u64> {
    if boot_id.is_empty() {
        return measure();
    }
    let file = dir.join(format!("tsc-khz-{boot_id}"));
    let cached = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|k| PLAUSIBLE_KHZ.contains(k));
    if cached.is_some() {
        return cached;
    }
    let khz = measure()?;
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(&file, format!("{khz}\n"));
    Some(khz)
}

/// Anything outside 100 MHz .. 10 GHz is a measuring error.
const PLAUSIBLE_KHZ: std::ops::Range<u64> = 100_000..10_000_000;

/// The host's TSC rate in kHz, measured against the monotonic clock over
/// a short window (the median of three, to shrug off a preemption).
fn host_tsc_khz() -> Option<u64> {
    let mut samples: Vec<u64> = (0..3)
        .filter_map(|_| sample(Duration::from_millis(10)))
        .collect();
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied()
}

#[cfg(target_arch = "x86_64")]
fn sample(window: Duration) -> Option<u64> {
    let (t0, c0) = (Instant::now(), rdtsc());
    while t0.elapsed() < window {
        std::hint::spin_loop();
    }
    let (c1, dt) = (rdtsc(), t0.elapsed());
    let khz = (c1.checked_sub(c0)? as u128 * 1_000_000 / dt.as_nanos().max(1)) as u64;
    PLAUSIBLE_KHZ.contains(&khz).then_some(khz)
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64; it only reads the
    // time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn sample(_window: Duration) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_a_plausible_rate() {
        let args = super::tcg_kernel_args();
        let khz: u64 = args
            .split_whitespace()
            .find_map(|a| a.strip_prefix("tsc_early_khz="))
            .and_then(|v| v.parse().ok())
            .expect("a tsc_early_khz argument");
        assert!((100_000..10_000_000).contains(&khz), "{khz}");
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("husk-tsc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_cached_rate_of_this_boot_is_used_without_measuring() {
        let d = dir("hit");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tsc-khz-boot1"), "2400000\n").unwrap();
        let khz = super::cached_khz(&d, "boot1", || panic!("measured despite the cache"));
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(khz, Some(2_400_000));
    }

    #[test]
    fn another_boot_or_a_bad_cache_is_measured_and_cached() {
        let d = dir("miss");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tsc-khz-old"), "2400000\n").unwrap();
        std::fs::write(d.join("tsc-khz-bad"), "7\n").unwrap();
        assert_eq!(
            super::cached_khz(&d, "new", || Some(3_000_000)),
            Some(3_000_000)
        );
        assert_eq!(
            super::cached_khz(&d, "bad", || Some(3_100_000)),
            Some(3_100_000)
        );
        let new = std::fs::read_to_string(d.join("tsc-khz-new")).unwrap();
        let bad = std::fs::read_to_string(d.join("tsc-khz-bad")).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!((new.trim(), bad.trim()), ("3000000", "3100000"));
    }
}
