//! Direct (PVH) boot: the ELF kernel inside Debian's bzImage, unpacked
//! once per kernel and booted by QEMU at its PVH entry point.
//!
//! Why: a bzImage is a small program that decompresses the real kernel
//! into guest RAM and relocates it before anything else runs. Under TCG
//! that is ~0.5–0.6 s of every cold boot (Debian's cloud kernel: 14 MiB of
//! LZ4 → 51 MiB), more guest RAM touched, and the 14 MiB image QEMU keeps
//! per VM for a reset. Debian's x86-64 kernels carry the Xen
//! `PHYS32_ENTRY` ELF note, so QEMU's `microvm` machine can load the
//! uncompressed ELF itself (mapped from the file, shared by every VM) and
//! enter the kernel proper at once.
//!
//! What it costs: the guest kernel runs at its link address (no KASLR for
//! the guest kernel; the bzImage's decompressor is what randomises it).
//! The VM boundary, not the guest kernel's layout, is what protects the
//! host; `HUSK_KERNEL_BOOT=bzimage` boots the bzImage instead.
//!
//! When the payload's compression is not one husk unpacks (LZ4, gzip) or
//! the ELF has no PVH note, VMs boot the bzImage; the reason is kept in
//! `vmlinux.refused-N` beside the kernel so it is not tried each start.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, SandboxError};

/// The unpacked ELF's file name beside the bzImage; the suffix changes
/// whenever what husk writes into it does, so an older one is not used.
const ELF_NAME: &str = "vmlinux.husk-2";

/// The marker that remembers why a kernel cannot boot at its PVH entry;
/// its suffix changes whenever the unpacker learns a format, so an old
/// refusal is tried again.
const REFUSED_NAME: &str = "vmlinux.refused-1";

/// Largest kernel husk will unpack (the payload's own size field is
/// believed only up to this).
const MAX_KERNEL_BYTES: usize = 512 << 20;

/// The legacy LZ4 stream's magic, as the kernel's `lz4 -l` writes it.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
const PHYS32_ENTRY: u32 = 18;

/// How a VM boots its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelBoot {
    /// QEMU loads the uncompressed ELF and enters it at its PVH entry.
    Pvh,
    /// QEMU loads the bzImage, which decompresses itself in the guest.
    BzImage,
}

impl KernelBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelBoot::Pvh => "pvh",
            KernelBoot::BzImage => "bzimage",
        }
    }
}

/// The kernel file to boot, how, and why not PVH when it is not.
#[derive(Debug, Clone)]
pub struct Settled {
    pub boot: KernelBoot,
    pub kernel: PathBuf,
    pub note: String,
}

/// What the user asked for (`HUSK_KERNEL_BOOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootChoice {
    /// `auto` or unset: PVH where the kernel allows it.
    Auto,
    /// `bzimage`: always the bzImage.
    BzImage,
}

impl BootChoice {
    /// `HUSK_KERNEL_BOOT`, refused with its value when it is neither.
    pub fn from_env() -> Result<Self> {
        match std::env::var("HUSK_KERNEL_BOOT").as_deref() {
            Err(_) | Ok("auto") | Ok("") => Ok(BootChoice::Auto),
            Ok("bzimage") => Ok(BootChoice::BzImage),
            Ok(other) => Err(SandboxError::Config(format!(
                "HUSK_KERNEL_BOOT must be `auto` or `bzimage`, not `{other}`"
            ))),
        }
    }
}

/// What boots for the bzImage at `bzimage`: its unpacked ELF (made now
/// if this kernel has none yet), or the bzImage itself with the reason.
/// Never fails for want of PVH: a kernel that cannot be unpacked, or an
/// ELF that cannot be stored, boots as a bzImage.
pub fn settle(bzimage: &Path, choice: BootChoice, progress: &(dyn Fn(&str) + Sync)) -> Settled {
    let bz = |note: String| Settled {
        boot: KernelBoot::BzImage,
        kernel: bzimage.to_path_buf(),
        note,
    };
    if choice == BootChoice::BzImage {
        return bz("HUSK_KERNEL_BOOT=bzimage".into());
    }
    let dir = bzimage.parent().unwrap_or(Path::new("."));
    let elf = dir.join(ELF_NAME);
    let marker = dir.join(REFUSED_NAME);
    let pvh = || Settled {
        boot: KernelBoot::Pvh,
        kernel: elf.clone(),
        note: "ELF kernel at its PVH entry".into(),
    };
    if let Ok(meta) = std::fs::metadata(&elf) {
        // A stored ELF of another length (cut short, replaced) is made anew.
        if meta.is_file() && Some(meta.len()) == recorded_size(bzimage) {
            return pvh();
        }
    }
    if let Ok(reason) = std::fs::read_to_string(&marker) {
        return bz(reason.trim().to_string());
    }
    progress("kernel: unpacking the ELF kernel for direct (PVH) boot …");
    sweep_temporaries(dir);
    let unpacked = std::fs::read(bzimage)
        .map_err(|e| format!("reading {}: {e}", bzimage.display()))
        .and_then(|image| unpack(&image).map_err(|r| format!("no PVH boot: {r}")));
    match unpacked {
        Ok((bytes, entry)) => match store(&elf, &bytes) {
            Ok(()) => {
                progress(&format!(
                    "kernel: {} ({} MiB, PVH entry {entry:#x})",
                    elf.display(),
                    bytes.len() >> 20
                ));
                pvh()
            }
            // Not remembered: a full disk may have room next time.
            Err(e) => {
                let note = format!("no PVH boot this time: {e}");
                progress(&format!("kernel: {note}; booting the bzImage"));
                bz(note)
            }
        },
        Err(reason) => {
            progress(&format!("kernel: {reason}; booting the bzImage"));
            if reason.starts_with("no PVH boot:") {
                // The kernel itself cannot: not tried again for it.
                let _ = store(&marker, reason.as_bytes());
            }
            bz(reason)
        }
    }
}

/// Removes temporaries an interrupted [`store`] left (older than ten
/// minutes, so another process's write in progress is not touched).
fn sweep_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(".vmlinux.") && name.ends_with(".tmp");
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if ours && old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` through a temporary name private to this
/// call (two threads of a daemon may settle at once), so a reader sees
/// the whole file or none.
fn store(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let io = |e| SandboxError::io(format!("writing {}", path.display()), e);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The ELF kernel in a bzImage, and its PVH entry point; else why not.
pub(super) fn unpack(image: &[u8]) -> std::result::Result<(Vec<u8>, u64), String> {
    let payload = payload(image)?;
    let mut elf = decompress(payload)?;
    let entry = pvh_entry(&elf)?;
    trim_zero_tails(&mut elf);
    Ok((elf, entry))
}

/// Shortens each loadable segment's file size to end at its last non-zero
/// byte (its memory size stays): the loader zero-fills the rest, as the
/// ELF format defines. The kernel's last segment is mostly `.bss` and
/// scratch space stored as zeros (~11 MiB of 14 in Debian's cloud
/// kernel), which QEMU would otherwise read from the file and keep
/// resident in every VM for a reset.
fn trim_zero_tails(elf: &mut [u8]) {
    let Some(headers) = program_headers(elf) else {
        return;
    };
    for ph in headers.iter().filter(|ph| ph.kind == PT_LOAD) {
        let Some(data) = segment(elf, ph) else {
            continue;
        };
        let kept = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
        // In bounds: `program_headers` read p_filesz from these 8 bytes.
        elf[ph.at + 32..ph.at + 40].copy_from_slice(&kept.to_le_bytes());
    }
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// One ELF64 program header: where it is in the file, and the fields
/// husk reads.
struct ProgramHeader {
    at: usize,
    kind: u32,
    offset: usize,
    filesz: usize,
}

/// The program headers of an ELF64 file, each read whole from inside
/// the file; `None` if the table is malformed or runs past the end.
fn program_headers(elf: &[u8]) -> Option<Vec<ProgramHeader>> {
    let phoff = usize::try_from(le64(elf, 32)?).ok()?;
    let entsize = usize::from(le16(elf, 54)?);
    let count = usize::from(le16(elf, 56)?);
    if entsize < 56 {
        return None;
    }
    (0..count)
        .map(|i| {
            let at = phoff.checked_add(i.checked_mul(entsize)?)?;
            let field = |o: usize| usize::try_from(le64(elf, at.checked_add(o)?)?).ok();
            Some(ProgramHeader {
                at,
                kind: le32(elf, at)?,
                offset: field(8)?,
                filesz: field(32)?,
            })
        })
        .collect()
}

/// A segment's bytes in the file, if they are all inside it.
fn segment<'a>(elf: &'a [u8], ph: &ProgramHeader) -> Option<&'a [u8]> {
    elf.get(ph.offset..ph.offset.checked_add(ph.filesz)?)
}

/// The compressed kernel inside a bzImage (boot protocol 2.08+).
fn payload(image: &[u8]) -> std::result::Result<&[u8], String> {
    let (start, len) = payload_span(image)?;
    image
        .get(start..start + len)
        .ok_or_else(|| format!("the payload ({len} bytes at {start}) runs past the file's end"))
}

/// Where the payload is, from the boot header alone (the first 0x250
/// bytes of the file).
fn payload_span(header: &[u8]) -> std::result::Result<(usize, usize), String> {
    if header.get(0x202..0x206) != Some(b"HdrS") {
        return Err("the kernel is not a bzImage (no HdrS boot header)".into());
    }
    let version = le16(header, 0x206).unwrap_or(0);
    if version < 0x0208 {
        return Err(format!(
            "boot protocol {version:#06x} has no payload fields (needs 2.08)"
        ));
    }
    let setup_sects = match header.get(0x1f1).copied() {
        Some(0) | None => 4,
        Some(n) => usize::from(n),
    };
    let (Some(off), Some(len)) = (le32(header, 0x248), le32(header, 0x24c)) else {
        return Err("the boot header is truncated".into());
    };
    Ok(((setup_sects + 1) * 512 + off as usize, len as usize))
}

/// The unpacked size the bzImage records (its payload's last 4 bytes),
/// read with two small reads: how a start checks the stored ELF is whole
/// without reading the kernel.
fn recorded_size(bzimage: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(bzimage).ok()?;
    let mut header = [0u8; 0x250];
    f.read_exact_at(&mut header, 0).ok()?;
    let (start, len) = payload_span(&header).ok()?;
    let mut size = [0u8; 4];
    f.read_exact_at(&mut size, (start + len).checked_sub(4)? as u64)
        .ok()?;
    Some(u64::from(u32::from_le_bytes(size)))
}

fn le16(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le64(b: &[u8], o: usize) -> Option<u64> {
    let bytes = b.get(o..o.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn le32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decompresses a kernel payload. The kernel's build appends the
/// uncompressed size as 4 little-endian bytes (gzip's own trailer ends
/// the same way), which bounds the output before anything is unpacked.
fn decompress(payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let n = payload.len();
    let size = (n >= 8)
        .then(|| le32(payload, n - 4))
        .flatten()
        .ok_or("the payload is too short")? as usize;
    if size > MAX_KERNEL_BYTES {
        return Err(format!(
            "the payload says it unpacks to {size} bytes, more than husk's limit of {MAX_KERNEL_BYTES}"
        ));
    }
    let out = match payload {
        [0x02, 0x21, 0x4c, 0x18, ..] => lz4_legacy(&payload[4..n - 4], size)?,
        [0x1f, 0x8b, ..] => gzip(payload, size)?,
        _ => return Err(format!("its payload is {}", compression_name(payload))),
    };
    if out.len() != size {
        return Err(format!(
            "the payload unpacked to {} bytes, not the {size} it records",
            out.len()
        ));
    }
    Ok(out)
}

fn compression_name(payload: &[u8]) -> &'static str {
    match payload {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz-compressed (husk unpacks LZ4 and gzip)",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd-compressed (husk unpacks LZ4 and gzip)",
        [b'B', b'Z', b'h', ..] => "bzip2-compressed (husk unpacks LZ4 and gzip)",
        [0x89, b'L', b'Z', b'O', ..] => "LZO-compressed (husk unpacks LZ4 and gzip)",
        [0x5d, 0, 0, ..] => "LZMA-compressed (husk unpacks LZ4 and gzip)",
        _ => "in a format husk does not know",
    }
}

/// `lz4 -l`: blocks, each its compressed length then the block; a repeated
/// magic starts a concatenated stream.
fn lz4_legacy(mut body: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = vec![0u8; size];
    let mut pos = 0;
    while !body.is_empty() {
        let len = le32(body, 0).ok_or("an LZ4 block header is truncated")?;
        body = &body[4..];
        if len == LZ4_LEGACY_MAGIC {
            continue;
        }
        let block = body
            .get(..len as usize)
            .ok_or("an LZ4 block runs past the payload's end")?;
        body = &body[len as usize..];
        pos += lz4_flex::block::decompress_into(block, &mut out[pos..])
            .map_err(|e| format!("LZ4 block at output byte {pos}: {e}"))?;
    }
    out.truncate(pos);
    Ok(out)
}

fn gzip(payload: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size);
    flate2::read::GzDecoder::new(payload)
        .take(size as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    Ok(out)
}

/// The PVH entry point of an x86-64 ELF kernel, from its notes.
fn pvh_entry(elf: &[u8]) -> std::result::Result<u64, String> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") || le16(elf, 18) != Some(62) {
        return Err("the unpacked kernel is not a little-endian x86-64 ELF".into());
    }
    let headers = program_headers(elf)
        .ok_or("the ELF's program headers are malformed or run past its end")?;
    for ph in headers.iter().filter(|ph| ph.kind == PT_NOTE) {
        let notes = segment(elf, ph).ok_or("a note segment runs past the ELF's end")?;
        if let Some(entry) = xen_entry(notes) {
            return Ok(entry);
        }
    }
    Err("the kernel has no PVH entry note (CONFIG_PVH is off)".into())
}

/// `PHYS32_ENTRY` among the notes of one segment.
fn xen_entry(mut notes: &[u8]) -> Option<u64> {
    let pad = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let namesz = le32(notes, 0)? as usize;
        let descsz = le32(notes, 4)? as usize;
        let kind = le32(notes, 8)?;
        let name = notes.get(12..12 + namesz)?;
        let desc_at = 12 + pad(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if name == b"Xen\0" && kind == PHYS32_ENTRY {
            return match desc.len() {
                4 => le32(desc, 0).map(u64::from),
                8 => Some(u64::from_le_bytes(desc.try_into().ok()?)),
                _ => None,
            };
        }
        notes = notes.get(desc_at + pad(descsz)..)?;
    }
    None
}

#[cfg(test)]
mod tests;
