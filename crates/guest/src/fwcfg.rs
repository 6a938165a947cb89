//! Reads a QEMU fw_cfg file straight from the device's I/O ports, so the
//! guest needs no `qemu_fw_cfg` kernel module to get its session secret.
//!
//! Loading that module cost ~25 ms of every cold boot under TCG (most of it
//! the module load itself, not its initialisation), and its sysfs tree
//! made the secret a file. Port access needs `CAP_SYS_RAWIO` and an
//! `ioperm` grant that PID 1 takes for the two fw_cfg ports only, for the
//! duration of one read, and drops again before any other process exists.
//!
//! The device (QEMU `docs/specs/fw_cfg.rst`): on x86 a 16-bit selector
//! port at 0x510 and a byte-wide data port at 0x511. Item 0x0000 holds the
//! signature `QEMU`; item 0x0019 is the file directory, a big-endian
//! count followed by 64-byte entries (`size: u32`, `select: u16`,
//! reserved `u16`, `name: [u8; 56]`, NUL-padded), all big-endian.

/// Selector port; the data port follows it.
const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = SELECTOR_PORT + 1;
const SIGNATURE_ITEM: u16 = 0x0000;
const FILE_DIR_ITEM: u16 = 0x0019;
const ENTRY_LEN: usize = 64;
const NAME_LEN: usize = 56;
/// More files than any QEMU configures; a larger count is a broken device.
const MAX_FILES: u32 = 4096;

/// One directory entry: the item to select and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub select: u16,
    pub size: u32,
}

/// Finds `name` in the directory's entries (the bytes after the count).
pub fn find_entry(entries: &[u8], name: &str) -> Option<Entry> {
    entries.chunks_exact(ENTRY_LEN).find_map(|e| {
        let raw = &e[8..8 + NAME_LEN];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        (&raw[..len] == name.as_bytes()).then(|| Entry {
            size: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            select: u16::from_be_bytes([e[4], e[5]]),
        })
    })
}

/// The contents of fw_cfg file `name`, if the machine has fw_cfg and the
/// file, and it is at most `limit` bytes. `Err` only for a device that
/// answers but is not usable (the caller names it).
#[cfg(target_arch = "x86_64")]
pub fn read_file(name: &str, limit: u32) -> Result<Option<Vec<u8>>, String> {
    let _grant = match PortGrant::take() {
        Ok(g) => g,
        Err(_) => return Ok(None), // no port access: no fw_cfg to read
    };
    let mut sig = [0u8; 4];
    read_item(SIGNATURE_ITEM, &mut sig);
    if &sig != b"QEMU" {
        return Ok(None);
    }
    let mut count = [0u8; 4];
    read_item(FILE_DIR_ITEM, &mut count);
    let count = u32::from_be_bytes(count);
    if count > MAX_FILES {
        return Err(format!("fw_cfg directory claims {count} files"));
    }
    // The directory is one item: the entries follow the count.
    let mut entries = vec![0u8; count as usize * ENTRY_LEN];
    read_bytes(&mut entries);
    let Some(entry) = find_entry(&entries, name) else {
        return Ok(None);
    };
    if entry.size > limit {
        return Err(format!(
            "fw_cfg file {name} is {} bytes (at most {limit})",
            entry.size
        ));
    }
    let mut data = vec![0u8; entry.size as usize];
    read_item(entry.select, &mut data);
    Ok(Some(data))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn read_file(_name: &str, _limit: u32) -> Result<Option<Vec<u8>>, String> {
    Ok(None)
}

/// Access to the two fw_cfg ports for this thread, dropped with the value.
#[cfg(target_arch = "x86_64")]
struct PortGrant;

#[cfg(target_arch = "x86_64")]
impl PortGrant {
    fn take() -> std::io::Result<PortGrant> {
        ioperm(true)?;
        Ok(PortGrant)
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for PortGrant {
    fn drop(&mut self) {
        let _ = ioperm(false);
    }
}

#[cfg(target_arch = "x86_64")]
fn ioperm(on: bool) -> std::io::Result<()> {
    // SAFETY: ioperm(2) takes plain integers; it changes only this
    // thread's I/O permission bitmap, for the two fw_cfg ports.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioperm,
            libc::c_ulong::from(SELECTOR_PORT),
            2 as libc::c_ulong,
            libc::c_int::from(on),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Selects `item` and fills `buf` from its start.
#[cfg(target_arch = "x86_64")]
fn read_item(item: u16, buf: &mut [u8]) {
    // SAFETY: the caller holds a PortGrant for 0x510..0x512; writing the
    // selector only chooses which fw_cfg item the data port reads.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") SELECTOR_PORT, in("ax") item,
            options(nomem, nostack, preserves_flags));
    }
    read_bytes(buf);
}

/// Reads the next `buf.len()` bytes of the selected item.
#[cfg(target_arch = "x86_64")]
fn read_bytes(buf: &mut [u8]) {
    for b in buf {
        let v: u8;
        // SAFETY: the caller holds a PortGrant; reading the data port only
        // advances the selected item's offset.
        unsafe {
            core::arch::asm!("in al, dx", out("al") v, in("dx") DATA_PORT,
                options(nomem, nostack, preserves_flags));
        }
        *b = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u32, select: u16, name: &str) -> Vec<u8> {
        let mut e = Vec::with_capacity(ENTRY_LEN);
        e.extend(size.to_be_bytes());
        e.extend(select.to_be_bytes());
        e.extend([0, 0]);
        let mut n = [0u8; NAME_LEN];
        n[..name.len()].copy_from_slice(name.as_bytes());
        e.extend(n);
        e
    }

    #[test]
    fn finds_an_entry_by_its_whole_name() {
        let mut dir = entry(28, 0x20, "etc/boot-fail-wait");
        dir.extend(entry(64, 0x21, "opt/husk/secret"));
        dir.extend(entry(9, 0x22, "opt/husk/secret2"));
        assert_eq!(
            find_entry(&dir, "opt/husk/secret"),
            Some(Entry {
                select: 0x21,
                size: 64
            })
        );
        assert_eq!(find_entry(&dir, "opt/husk/secret2").unwrap().select, 0x22);
        assert_eq!(find_entry(&dir, "opt/husk"), None);
        assert_eq!(find_entry(&dir, "opt/husk/secret3"), None);
    }

    #[test]
    fn a_name_filling_the_field_and_a_short_directory() {
        let long = "n".repeat(NAME_LEN);
        let dir = entry(1, 0x30, &long);
        assert_eq!(find_entry(&dir, &long).unwrap().select, 0x30);
        // A truncated trailing entry is ignored, not read past.
        assert_eq!(find_entry(&dir[..ENTRY_LEN - 1], &long), None);
    }
}
