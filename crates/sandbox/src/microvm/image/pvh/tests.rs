use super::*;

/// A minimal x86-64 ELF: header, one PT_NOTE program header, and the notes
/// (a foreign note first, then, when `entry` is given, Xen's entry note).
fn elf(entry: Option<u32>) -> Vec<u8> {
    let mut notes = Vec::new();
    let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
        notes.extend((name.len() as u32).to_le_bytes());
        notes.extend((desc.len() as u32).to_le_bytes());
        notes.extend(kind.to_le_bytes());
        notes.extend(name);
        notes.resize(notes.len().div_ceil(4) * 4, 0);
        notes.extend(desc);
        notes.resize(notes.len().div_ceil(4) * 4, 0);
    };
    note(b"GNU\0", 3, &[0xab; 20]);
    note(b"Xen\0", 6, b"linux\0");
    if let Some(e) = entry {
        note(b"Xen\0", PHYS32_ENTRY, &u64::from(e).to_le_bytes());
    }
    let mut e = vec![0u8; 64];
    e[..6].copy_from_slice(b"\x7fELF\x02\x01");
    e[18..20].copy_from_slice(&62u16.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let mut ph = vec![0u8; 56];
    ph[..4].copy_from_slice(&4u32.to_le_bytes());
    ph[8..16].copy_from_slice(&120u64.to_le_bytes());
    ph[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
    e.extend(ph);
    e.extend(notes);
    // Something to compress, as a kernel has.
    e.extend((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()));
    e
}

/// `lz4 -l` of `data` in blocks of `block` bytes, with the kernel's size
/// trailer.
fn lz4_payload(data: &[u8], block: usize) -> Vec<u8> {
    let mut p = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
    for chunk in data.chunks(block) {
        let c = lz4_flex::block::compress(chunk);
        p.extend((c.len() as u32).to_le_bytes());
        p.extend(c);
    }
    p.extend((data.len() as u32).to_le_bytes());
    p
}

fn gzip_payload(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A bzImage around `payload`: three setup sectors, the boot header, the
/// payload at offset 16 of the protected-mode part.
fn bzimage(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4 * 512 + 16];
    b[0x1f1] = 3;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend(payload);
    b.extend([0xee; 64]); // what follows the payload in a real bzImage
    b
}

#[test]
fn lz4_and_gzip_payloads_unpack_to_the_elf_and_its_entry() {
    let want = elf(Some(0x0100_0850));
    for payload in [
        lz4_payload(&want, 8 << 20),
        lz4_payload(&want, 4096),
        gzip_payload(&want),
    ] {
        let (got, entry) = unpack(&bzimage(&payload)).unwrap();
        assert_eq!(got, want);
        assert_eq!(entry, 0x0100_0850);
    }
}

#[test]
fn a_concatenated_lz4_stream_is_followed() {
    let want = elf(Some(7));
    let (a, b) = want.split_at(want.len() / 2);
    let mut p = lz4_payload(a, 1 << 20);
    p.truncate(p.len() - 4);
    let second = lz4_payload(b, 1 << 20);
    p.extend(&second[..second.len() - 4]);
    p.extend((want.len() as u32).to_le_bytes());
    assert_eq!(unpack(&bzimage(&p)).unwrap().0, want);
}

fn reason(image: &[u8]) -> String {
    unpack(image).expect_err("must not unpack")
}

#[test]
fn bad_images_are_refused_with_their_reason() {
    let good = lz4_payload(&elf(Some(1)), 1 << 20);
    let r = reason(&good);
    assert!(r.contains("no HdrS"), "{r}");

    let mut old = bzimage(&good);
    old[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
    let r = reason(&old);
    assert!(r.contains("needs 2.08"), "{r}");

    let whole = bzimage(&good);
    let r = reason(&whole[..whole.len() - 100]);
    assert!(r.contains("runs past the file's end"), "{r}");

    let r = reason(&bzimage(b"\xfd7zXZ\0 rest of an xz stream\x10\0\0\0"));
    assert!(r.contains("xz-compressed"), "{r}");

    let mut huge = good.clone();
    let n = huge.len();
    huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let r = reason(&bzimage(&huge));
    assert!(r.contains("more than husk's limit"), "{r}");

    let mut short = good.clone();
    let n = short.len();
    short[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    let r = reason(&bzimage(&short));
    assert!(r.contains("LZ4 block"), "{r}");

    let mut cut = good.clone();
    let n = cut.len();
    cut.drain(n - 40..n - 4);
    let r = reason(&bzimage(&cut));
    assert!(r.contains("runs past the payload's end"), "{r}");

    let r = reason(&bzimage(&lz4_payload(&elf(None), 1 << 20)));
    assert!(r.contains("no PVH entry note"), "{r}");

    let r = reason(&bzimage(&gzip_payload(b"not an elf at all")));
    assert!(r.contains("not a little-endian x86-64 ELF"), "{r}");
}

#[test]
fn settle_unpacks_once_and_remembers_a_refusal() {
    let dir = std::env::temp_dir().join(format!("husk-pvh-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("good")).unwrap();
    std::fs::create_dir_all(dir.join("xz")).unwrap();
    let quiet = |_: &str| {};
    let want = elf(Some(0x1234));
    let good = dir.join("good/vmlinuz");
    std::fs::write(&good, bzimage(&lz4_payload(&want, 1 << 20))).unwrap();
    let s = settle(&good, BootChoice::Auto, &quiet);
    assert_eq!(s.boot, KernelBoot::Pvh);
    assert_eq!(s.kernel, dir.join("good").join(ELF_NAME));
    assert_eq!(std::fs::read(&s.kernel).unwrap(), want);
    // The second time the ELF is only looked up (a same-length change is
    // kept: proof it was not unpacked again) ...
    let mut marked = want.clone();
    marked[100] ^= 0xff;
    std::fs::write(&s.kernel, &marked).unwrap();
    assert_eq!(
        settle(&good, BootChoice::Auto, &quiet).boot,
        KernelBoot::Pvh
    );
    assert_eq!(std::fs::read(&s.kernel).unwrap(), marked);
    // ... but one cut short is made anew.
    std::fs::write(&s.kernel, &want[..want.len() / 2]).unwrap();
    assert_eq!(
        settle(&good, BootChoice::Auto, &quiet).boot,
        KernelBoot::Pvh
    );
    assert_eq!(std::fs::read(&s.kernel).unwrap(), want);

    let xz = dir.join("xz/vmlinuz");
    std::fs::write(&xz, bzimage(b"\xfd7zXZ\0 rest\x10\0\0\0")).unwrap();
    let s = settle(&xz, BootChoice::Auto, &quiet);
    assert_eq!(
        (s.boot, s.kernel.as_path()),
        (KernelBoot::BzImage, xz.as_path())
    );
    assert!(s.note.contains("xz-compressed"), "{}", s.note);
    let marker = std::fs::read_to_string(dir.join("xz").join(REFUSED_NAME)).unwrap();
    assert_eq!(marker, s.note);
    // The refusal is remembered: even a kernel that could now be unpacked
    // is not tried again under the same marker.
    std::fs::write(&xz, bzimage(&lz4_payload(&want, 1 << 20))).unwrap();
    let again = settle(&xz, BootChoice::Auto, &quiet);
    assert_eq!(
        (again.boot, again.note),
        (KernelBoot::BzImage, s.note.clone())
    );
    assert!(!dir.join("xz").join(ELF_NAME).exists());
    // An ELF that cannot be stored (here a directory holds its name)
    // boots the bzImage this time, and nothing is remembered.
    std::fs::create_dir_all(dir.join("blocked")).unwrap();
    let blocked = dir.join("blocked/vmlinuz");
    std::fs::write(&blocked, bzimage(&lz4_payload(&want, 1 << 20))).unwrap();
    std::fs::create_dir(dir.join("blocked").join(ELF_NAME)).unwrap();
    let b = settle(&blocked, BootChoice::Auto, &quiet);
    assert_eq!(
        (b.boot, b.kernel.as_path()),
        (KernelBoot::BzImage, blocked.as_path())
    );
    assert!(b.note.contains("no PVH boot this time"), "{}", b.note);
    assert!(!dir.join("blocked").join(REFUSED_NAME).exists());
    // Asked for the bzImage, the ELF is neither made nor used.
    let asked = settle(&good, BootChoice::BzImage, &quiet);
    assert_eq!(
        (asked.boot, asked.kernel),
        (KernelBoot::BzImage, good.clone())
    );
    let names: Vec<_> = std::fs::read_dir(dir.join("xz"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loadable_segments_lose_their_zero_tails_in_the_file_only() {
    // Two PT_LOAD headers after the ELF header: one ending in zeros, one
    // ending in data.
    let mut e = vec![0u8; 64 + 2 * 56];
    e[..6].copy_from_slice(b"\x7fELF\x02\x01");
    e[32..40].copy_from_slice(&64u64.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&2u16.to_le_bytes());
    let segs: [&[u8]; 2] = [&[1, 2, 3, 0, 0, 0, 0, 0], &[0, 0, 9]];
    for (i, seg) in segs.iter().enumerate() {
        let ph = 64 + i * 56;
        let off = e.len() as u64;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(seg.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&4096u64.to_le_bytes());
        e.extend(*seg);
    }
    let before = e.clone();
    trim_zero_tails(&mut e);
    let field = |e: &[u8], o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap());
    assert_eq!(field(&e, 64 + 32), 3, "filesz of the zero-tailed segment");
    assert_eq!(field(&e, 64 + 40), 4096, "its memsz");
    assert_eq!(field(&e, 120 + 32), 3, "filesz of the other");
    // Nothing else changed.
    e[96..104].copy_from_slice(&before[96..104]);
    assert_eq!(e, before);
}

/// ELF headers that point outside the file are refused, never a panic.
#[test]
fn malformed_program_headers_are_refused() {
    let good = elf(Some(9));
    let set = |e: &mut Vec<u8>, at: usize, v: &[u8]| e[at..at + v.len()].copy_from_slice(v);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut far = good.clone();
    set(&mut far, 32, &(u64::MAX - 2).to_le_bytes()); // e_phoff
    cases.push(("malformed or run past", far));
    let mut small = good.clone();
    set(&mut small, 54, &40u16.to_le_bytes()); // e_phentsize
    cases.push(("malformed or run past", small));
    let mut many = good.clone();
    set(&mut many, 56, &u16::MAX.to_le_bytes()); // e_phnum
    cases.push(("malformed or run past", many));
    let mut notes_out = good.clone();
    set(&mut notes_out, 64 + 8, &(u64::MAX - 4).to_le_bytes()); // p_offset
    cases.push(("note segment runs past", notes_out));
    let mut notes_long = good.clone();
    set(&mut notes_long, 64 + 32, &(1u64 << 40).to_le_bytes()); // p_filesz
    cases.push(("note segment runs past", notes_long));
    for (want, e) in cases {
        let r = pvh_entry(&e).expect_err(want);
        assert!(r.contains(want), "{want}: {r}");
        let mut trimmed = e.clone();
        trim_zero_tails(&mut trimmed);
        assert_eq!(trimmed, e, "{want}: trimming a malformed ELF changed it");
    }
    assert_eq!(pvh_entry(&good), Ok(9));
}
