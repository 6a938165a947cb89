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

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Kernel arguments that pin the guest's TSC rate (empty when the host's
/// rate cannot be measured).
pub fn tcg_kernel_args() -> String {
    static ARGS: OnceLock<String> = OnceLock::new();
    ARGS.get_or_init(|| match host_tsc_khz() {
        Some(khz) => format!(" tsc_early_khz={khz} tsc=reliable"),
        None => String::new(),
    })
    .clone()
}

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
    // Anything outside 100 MHz .. 10 GHz is a measuring error.
    (100_000..10_000_000).contains(&khz).then_some(khz)
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
}
