//! A minimal writer for the `newc` cpio format, the one the Linux kernel
//! unpacks as an initramfs. Written here (instead of shelling out to
//! `cpio`) so an image needs no root, no staging tree and no extra tool,
//! and so its bytes are deterministic: same inputs, same image, same key.

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Streams cpio entries into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | mode, 0, &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | mode, 0, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 0, target.as_bytes())
    }

    /// A character device node (the kernel needs `/dev/console` before
    /// `/init` can mount devtmpfs).
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | mode, (major << 8) | minor, &[])
    }

    /// Writes the trailer and returns the sink and the archive size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.header("TRAILER!!!", 0, 0, 0, 0)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {path:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is over 4 GiB"))
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, size, rdev)?;
        self.put(data)?;
        self.pad()
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, size: u32, rdev: u32) -> io::Result<()> {
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let (rmaj, rmin) = (rdev >> 8, rdev & 0xff);
        let namesize = name.len() as u32 + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, namesize, 0,
        ];
        let mut h = String::with_capacity(110);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// newc aligns every header and every file body to 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("/bin/x", 0o755, b"hello").unwrap();
        w.symlink("bin/y", "x").unwrap();
        let (bytes, len) = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert_eq!(len % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // The file entry's header: mode 0100755, size 5.
        let at = text.find("bin/x\0").unwrap();
        let header = &text[at - 110..at];
        assert_eq!(&header[14..22], "000081ed");
        assert_eq!(&header[54..62], "00000005");
    }

    #[test]
    fn cpio_tool_reads_it_back() {
        let Some(cpio) = crate::host::which("cpio") else {
            eprintln!("skipped: no cpio tool on this host to cross-check with");
            return;
        };
        let mut w = CpioWriter::new(Vec::new());
        w.dir("d", 0o755).unwrap();
        w.file("d/f", 0o644, b"abc").unwrap();
        w.symlink("d/l", "f").unwrap();
        let (bytes, _) = w.finish().unwrap();
        let mut child = std::process::Command::new(cpio)
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "d\nd/f\nd/l\n");
    }

    #[test]
    fn rejects_empty_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/", 0o644, b"").is_err());
    }
}
