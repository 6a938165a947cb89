//! The guest kernel: Debian's cloud kernel package, fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x` (no root needed),
//! checked against the SHA-256 that apt's package index records, and cached
//! by package version. Runs reuse the cached kernel without asking apt;
//! `husk image build` asks apt for the newest one.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, SandboxError};

/// The metapackage that always depends on the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked kernel in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kernel {
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version.
    pub package_version: String,
    /// SHA-256 of the `.deb`, as apt's index gives it (and checked).
    pub sha256: String,
    /// `uname -r`.
    pub release: String,
    #[serde(skip)]
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    #[serde(skip)]
    pub moddir: PathBuf,
}

/// Returns a cached kernel, or fetches one. With `refresh`, apt is asked
/// for the newest version even when one is cached.
pub fn get(cache: &Path, refresh: bool, progress: &(dyn Fn(&str) + Sync)) -> Result<Kernel> {
    let root = cache.join("kernels");
    let current = root.join("current");
    let cached = cached(cache);
    if let (Some(k), false) = (&cached, refresh) {
        return Ok(k.clone());
    }
    let (package, version, sha256) = match resolve_package() {
        Ok(found) => found,
        Err(e) => match cached {
            Some(k) => {
                progress(&format!(
                    "kernel: cannot ask apt for a newer kernel ({e}); keeping {}",
                    k.package
                ));
                return Ok(k);
            }
            None => return Err(e),
        },
    };
    let dir = root.join(format!("{package}_{version}"));
    let kernel = match load(&dir) {
        Some(k) if k.sha256 == sha256 => {
            progress(&format!("kernel: {package} {version} (cached)"));
            k
        }
        _ => fetch(&root, &dir, &package, &version, &sha256, progress)?,
    };
    write_atomic(
        &current,
        dir.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .as_bytes(),
    )?;
    Ok(kernel)
}

/// The kernel in the cache (`kernels/current`), if any; never fetches.
pub fn cached(cache: &Path) -> Option<Kernel> {
    let root = cache.join("kernels");
    std::fs::read_to_string(root.join("current"))
        .ok()
        .and_then(|name| load(&root.join(name.trim())))
}

fn load(dir: &Path) -> Option<Kernel> {
    let text = std::fs::read_to_string(dir.join("kernel.json")).ok()?;
    let mut k: Kernel = serde_json::from_str(&text).ok()?;
    k.vmlinuz = dir.join("vmlinuz");
    k.moddir = dir.join("modules");
    (k.vmlinuz.is_file() && k.moddir.is_dir()).then_some(k)
}

/// The concrete kernel package behind the metapackage (or
/// `$HUSK_KERNEL_PACKAGE`), its version and its checksum.
fn resolve_package() -> Result<(String, String, String)> {
    let wanted = std::env::var("HUSK_KERNEL_PACKAGE").unwrap_or_else(|_| META_PACKAGE.to_string());
    let mut package = wanted.clone();
    let deps = apt(&[
        "apt-cache",
        "depends",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        &wanted,
    ])?;
    if let Some(real) = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
    {
        package = real.to_string();
    }
    let show = apt(&["apt-cache", "show", "--no-all-versions", &package])?;
    let field = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let version =
        field("Version:").ok_or_else(|| apt_error(&package, "no Version in apt-cache show"))?;
    let sha = field("SHA256:").ok_or_else(|| apt_error(&package, "no SHA256 in apt-cache show"))?;
    Ok((package, version, sha))
}

fn apt(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| SandboxError::MissingTool {
            tool: "apt-cache",
            hint: format!("husk fetches Debian's cloud kernel with apt ({e})"),
        })?;
    let target = args.last().copied().unwrap_or_default();
    if !out.status.success() || out.stdout.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(apt_error(
            target,
            err.lines().next().unwrap_or("apt knows no such package"),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt_error(package: &str, why: &str) -> SandboxError {
    SandboxError::Config(format!(
        "cannot find the guest kernel package {package}: {why} (run `apt-get update` once, or set HUSK_KERNEL_PACKAGE)"
    ))
}

fn fetch(
    root: &Path,
    dir: &Path,
    package: &str,
    version: &str,
    sha256: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Kernel> {
    let tmp = root.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| SandboxError::io(format!("creating {}", tmp.display()), e))?;
    let result = fetch_into(&tmp, dir, package, version, sha256, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(
    tmp: &Path,
    dir: &Path,
    package: &str,
    version: &str,
    sha256: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Kernel> {
    progress(&format!(
        "kernel: downloading {package} {version} with apt-get …"
    ));
    run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(tmp),
        "apt-get download",
    )?;
    let deb = std::fs::read_dir(tmp)
        .map_err(|e| SandboxError::io("reading the download directory", e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| apt_error(package, "apt-get download produced no .deb"))?;
    progress("kernel: checking the package's SHA-256 …");
    let got = sha256_file(&deb)?;
    if !got.eq_ignore_ascii_case(sha256) {
        return Err(SandboxError::Config(format!(
            "{} has SHA-256 {got}, but apt's index says {sha256}; not using it",
            deb.display()
        )));
    }
    progress("kernel: unpacking …");
    let unpacked = tmp.join("x");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg-deb -x",
    )?;
    let (vmlinuz, release) = find_vmlinuz(&unpacked.join("boot"))?;
    let staged = tmp.join("kernel");
    std::fs::create_dir_all(&staged).map_err(|e| SandboxError::io("staging the kernel", e))?;
    let mv = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .map_err(|e| SandboxError::io(format!("moving {}", from.display()), e))
    };
    mv(&vmlinuz, &staged.join("vmlinuz"))?;
    mv(
        &unpacked.join("lib/modules").join(&release),
        &staged.join("modules"),
    )?;
    let kernel = Kernel {
        package: package.into(),
        package_version: version.into(),
        sha256: sha256.to_ascii_lowercase(),
        release,
        vmlinuz: dir.join("vmlinuz"),
        moddir: dir.join("modules"),
    };
    let json = serde_json::to_vec_pretty(&kernel)
        .map_err(|e| SandboxError::Config(format!("kernel record: {e}")))?;
    std::fs::write(staged.join("kernel.json"), json)
        .map_err(|e| SandboxError::io("writing kernel.json", e))?;
    let _ = std::fs::remove_dir_all(dir);
    mv(&staged, dir)?;
    progress(&format!("kernel: {} ready", kernel.release));
    Ok(kernel)
}

fn find_vmlinuz(boot: &Path) -> Result<(PathBuf, String)> {
    std::fs::read_dir(boot)
        .map_err(|e| SandboxError::io(format!("reading {}", boot.display()), e))?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-")
                .map(|r| (e.path(), r.to_string()))
        })
        .ok_or_else(|| {
            SandboxError::Config(format!(
                "the kernel package has no {}/vmlinuz-*",
                boot.display()
            ))
        })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| SandboxError::io(format!("running {what}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(SandboxError::Config(format!(
        "{what} failed: {}",
        err.trim()
    )))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| SandboxError::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .map_err(|e| SandboxError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}
