//! `husk serve --pool-config FILE`: warm pools of other sizes than a
//! spec's default sandbox, one entry per pool:
//!
//! ```yaml
//! pools:
//!   - backend: microvm      # or namespace
//!     size: 2               # ready sandboxes kept, 0 to 64
//!     memory_mb: 2048       # optional, as in a spec's sandbox section
//!     vcpus: 2              # optional
//!     disk_mb: 4096         # optional
//! ```
//!
//! Parsed strictly, like specs: an unknown key, a wrong type or a value
//! out of a spec's range is an error naming the entry and the key.

use std::path::Path;

use husk_sandbox::BackendKind;
use yaml_rust2::{Yaml, YamlLoader};

use crate::pools::{MAX_POOL_SIZE, PoolError, PoolRequest, PoolSandbox};

/// The largest pool config file read.
pub const MAX_POOL_CONFIG_BYTES: u64 = 64 * 1024;
/// The most pools one file may declare.
pub const MAX_POOLS: usize = 16;

const KEYS: [&str; 5] = ["backend", "size", "memory_mb", "vcpus", "disk_mb"];

/// Reads and parses the pool config at `path`.
pub fn load(path: &Path) -> Result<Vec<PoolRequest>, PoolError> {
    let err = |message: String| PoolError::Config {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_POOL_CONFIG_BYTES {
        return Err(err(format!(
            "{} bytes; at most {MAX_POOL_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// Parses a pool config's text.
pub fn parse(text: &str) -> Result<Vec<PoolRequest>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let [doc] = docs.as_slice() else {
        return Err("expected one YAML document with a `pools` list".into());
    };
    let Yaml::Hash(top) = doc else {
        return Err("expected a mapping with a `pools` list".into());
    };
    for key in top.keys() {
        if key.as_str() != Some("pools") {
            return Err(format!(
                "unknown key {}; the only key is `pools`",
                show(key)
            ));
        }
    }
    let Some(Yaml::Array(entries)) = top.get(&Yaml::String("pools".into())) else {
        return Err("`pools` must be a list of pools".into());
    };
    if entries.is_empty() || entries.len() > MAX_POOLS {
        return Err(format!(
            "`pools` has {} entries; give 1 to {MAX_POOLS}",
            entries.len()
        ));
    }
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        out.push(entry(e).map_err(|m| format!("pools[{i}]: {m}"))?);
    }
    crate::pools::merge(out, Vec::new()).map_err(|e| e.to_string())
}

fn entry(e: &Yaml) -> Result<PoolRequest, String> {
    let Yaml::Hash(map) = e else {
        return Err("expected a mapping (backend, size, …)".into());
    };
    for key in map.keys() {
        if !key.as_str().is_some_and(|k| KEYS.contains(&k)) {
            return Err(format!(
                "unknown key {}; expected one of {}",
                show(key),
                KEYS.join(", ")
            ));
        }
    }
    let get = |k: &str| map.get(&Yaml::String(k.into()));
    let backend = match get("backend").and_then(Yaml::as_str) {
        Some("namespace") => BackendKind::Namespace,
        Some("microvm") => BackendKind::Microvm,
        _ => return Err("backend: expected namespace or microvm".into()),
    };
    let size = uint(get("size"), "size", 0, MAX_POOL_SIZE as u64)?
        .ok_or("size: missing (ready sandboxes to keep, 0 to 64)")? as usize;
    let memory_mb = uint(
        get("memory_mb"),
        "memory_mb",
        husk_spec::MIN_MEMORY_MB.into(),
        husk_spec::MAX_MEMORY_MB.into(),
    )?;
    let vcpus = uint(get("vcpus"), "vcpus", 1, husk_spec::MAX_VCPUS.into())?;
    let disk_mb = uint(
        get("disk_mb"),
        "disk_mb",
        husk_spec::MIN_DISK_MB.into(),
        husk_spec::MAX_DISK_MB.into(),
    )?;
    Ok(PoolRequest {
        backend,
        size,
        sandbox: PoolSandbox {
            memory_mb: memory_mb.map(|v| v as u32),
            vcpus: vcpus.map(|v| v as u32),
            disk_mb: disk_mb.map(|v| v as u32),
        },
    })
}

/// An optional whole number in `min..=max`.
fn uint(v: Option<&Yaml>, key: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    let Some(v) = v else { return Ok(None) };
    match v.as_i64() {
        Some(n) if n >= 0 && (min..=max).contains(&(n as u64)) => Ok(Some(n as u64)),
        Some(n) => Err(format!("{key}: must be between {min} and {max}, found {n}")),
        None => Err(format!("{key}: expected a whole number, found {}", show(v))),
    }
}

fn show(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => format!("{s:?}"),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        Yaml::Array(_) => "a list".into(),
        Yaml::Hash(_) => "a mapping".into(),
        _ => "a YAML value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_of_several_sizes_parse() {
        let r = parse(
            "pools:\n  - backend: microvm\n    size: 2\n  - backend: microvm\n    size: 1\n    memory_mb: 2048\n    vcpus: 2\n  - {backend: namespace, size: 4, disk_mb: 4096}\n",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].sandbox, PoolSandbox::default());
        assert_eq!(r[1].sandbox.memory_mb, Some(2048));
        assert_eq!(r[1].template().memory_mb, 2048);
        assert_eq!(r[1].template().vcpus, 2);
        assert_eq!(r[2].backend, BackendKind::Namespace);
        assert_eq!(r[2].template().disk_mb, 4096);
    }

    #[test]
    fn bad_configs_name_the_entry_and_key() {
        for (bad, says) in [
            ("pools: []", "give 1 to 16"),
            ("pool: []", "unknown key \"pool\""),
            (
                "pools:\n  - backend: vm\n    size: 1",
                "pools[0]: backend: expected",
            ),
            ("pools:\n  - backend: microvm", "pools[0]: size: missing"),
            (
                "pools:\n  - {backend: microvm, size: 65}",
                "size: must be between 0 and 64",
            ),
            (
                "pools:\n  - {backend: microvm, size: 1, memory_mb: 64}",
                "memory_mb: must be between 128",
            ),
            (
                "pools:\n  - {backend: microvm, size: 1, vcpus: two}",
                "vcpus: expected a whole number, found \"two\"",
            ),
            (
                "pools:\n  - {backend: microvm, size: 1, memroy_mb: 2048}",
                "unknown key \"memroy_mb\"",
            ),
            (
                "pools:\n  - {backend: microvm, size: 1}\n  - {backend: microvm, size: 3, memory_mb: 1024}",
                "given twice",
            ),
            ("pools: [", "not YAML"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pools.yaml");
        std::fs::write(&p, "#".repeat(MAX_POOL_CONFIG_BYTES as usize + 1)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("at most 65536"), "{e}");
        let e = load(&dir.path().join("none.yaml")).unwrap_err().to_string();
        assert!(e.contains("none.yaml"), "{e}");
    }
}
