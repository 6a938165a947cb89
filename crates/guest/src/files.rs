//! File RPCs confined to a set of allowed roots.
//!
//! A request path must be absolute, free of `..`, and inside one of the
//! roots (`/workspace`, `/home/sandbox`, `/tmp` and what the host adds). The
//! part below the root is then opened with `openat2(RESOLVE_BENEATH)` on the
//! root directory, so the *kernel* refuses any symlink (absolute, or relative
//! with `..`) that would leave the root, including races where a link is
//! swapped in between checks.
//!
//! Nothing here may block for long: every open is non-blocking (a FIFO with
//! no peer, or a file under a lease, fails at once instead of waiting) and
//! contents are only read from or written to regular files (a FIFO or a
//! device is refused with `NotRegularFile`). The server still runs these
//! calls off its control loop, so a slow disk never stalls exec or ping.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use husk_protocol::{
    DirEntry, ErrorKind, ErrorReply, FileKind, FileStat, MAX_DATA_CHUNK, MAX_PATH_LEN,
};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The built-in roots every sandbox has.
pub const DEFAULT_ROOTS: [&str; 3] = ["/workspace", "/home/sandbox", "/tmp"];

/// Result type of every file RPC.
pub type FileResult<T> = Result<T, ErrorReply>;

/// Where file RPCs may go, and who owns what they create.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<PathBuf>,
    /// When the guest runs as root (micro-VM), new files and directories are
    /// handed to the sandbox user so the agent can change them.
    owner: Option<(u32, u32)>,
}

impl Roots {
    pub fn new(extra: &[String], owner: Option<(u32, u32)>) -> Roots {
        let mut roots: Vec<PathBuf> = DEFAULT_ROOTS.iter().map(PathBuf::from).collect();
        roots.extend(extra.iter().filter_map(|r| normalize(r).ok()));
        // Longest first, so a nested extra root wins over its parent.
        roots.sort_by_key(|r| std::cmp::Reverse(r.as_os_str().len()));
        roots.dedup();
        Roots { roots, owner }
    }

    /// The lexical half of confinement, a pure function: the root `path`
    /// lies under and the rest of it below that root (empty for the root
    /// itself). The kernel does the other half when the rest is opened
    /// beneath the root. Public for the `guest_paths` fuzz target.
    pub fn confine(&self, path: &str) -> FileResult<(&Path, PathBuf)> {
        let clean = normalize(path)?;
        for root in &self.roots {
            if let Ok(rest) = clean.strip_prefix(root) {
                return Ok((root, rest.to_path_buf()));
            }
        }
        Err(reply(
            ErrorKind::OutsideRoots,
            format!("{path}: outside the allowed roots ({})", self.describe()),
        ))
    }

    /// Splits `path` into (open root directory, relative rest).
    fn locate(&self, path: &str) -> FileResult<(OwnedFd, PathBuf)> {
        let (root, rest) = self.confine(path)?;
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_reply(e, root.to_string_lossy().as_ref()))?;
        let rest = if rest.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rest
        };
        Ok((fd, rest))
    }

    fn describe(&self) -> String {
        let mut names: Vec<_> = self.roots.iter().map(|r| r.to_string_lossy()).collect();
        names.sort();
        names.join(", ")
    }

    fn open(&self, path: &str, flags: OFlags, mode: u32) -> FileResult<OwnedFd> {
        let (root, rest) = self.locate(path)?;
        open_beneath(&root, &rest, flags, mode).map_err(|e| errno_reply(e, path))
    }

    /// Opens a regular file for reading or writing its contents: without
    /// blocking, and refusing anything else (checked on the open file, so a
    /// path swapped in between cannot slip through).
    fn open_regular(&self, path: &str, flags: OFlags, mode: u32) -> FileResult<File> {
        let (root, rest) = self.locate(path)?;
        let fd = match open_beneath(&root, &rest, flags | OFlags::NONBLOCK, mode) {
            Ok(fd) => fd,
            // A FIFO with no reader, a socket, or a device without a driver.
            Err(Errno::NXIO) => {
                let what = open_beneath(&root, &rest, OFlags::PATH, 0)
                    .and_then(|fd| rustix::fs::fstat(&fd))
                    .map_or("not a regular file", |st| kind_name(st.st_mode));
                return Err(not_regular(path, what));
            }
            Err(e) => return Err(errno_reply(e, path)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| errno_reply(e, path))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => {
                return Err(reply(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory"),
                ));
            }
            other => return Err(not_regular(path, kind_name(other))),
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so a descriptor
        // handed to a process (detached output) looks ordinary.
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| errno_reply(e, path))?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(|e| errno_reply(e, path))?;
        Ok(File::from(fd))
    }

    /// Opens (creating or truncating) a regular file that a detached
    /// process's output is appended to.
    pub fn open_output(&self, path: &str) -> FileResult<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::APPEND | OFlags::CLOEXEC;
        let file = self.open_regular(path, flags, 0o644)?;
        self.chown_new(&file);
        Ok(file)
    }

    /// Reads up to `len` bytes at `offset`; `eof` when the file ends there.
    pub fn read(&self, path: &str, offset: u64, len: u32) -> FileResult<(Vec<u8>, bool)> {
        let file = self.open_regular(path, OFlags::RDONLY | OFlags::CLOEXEC, 0)?;
        let size = file.metadata().map_err(|e| io_reply(e, path))?.len();
        let want = (len as usize).min(MAX_DATA_CHUNK);
        let avail = size.saturating_sub(offset).min(want as u64) as usize;
        let mut buf = vec![0u8; avail];
        let mut filled = 0;
        while filled < avail {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_reply(e, path)),
            }
        }
        buf.truncate(filled);
        Ok((buf, offset + filled as u64 >= size))
    }

    /// Writes one chunk, creating the file (not its parents) if needed.
    pub fn write(&self, req: &husk_protocol::WriteFile) -> FileResult<()> {
        if req.data.len() > MAX_DATA_CHUNK {
            return Err(reply(
                ErrorKind::TooLarge,
                format!("write chunk over {MAX_DATA_CHUNK} bytes"),
            ));
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        let file = self.open_regular(&req.path, flags, req.mode & 0o7777)?;
        file.write_all_at(&req.data, req.offset)
            .map_err(|e| io_reply(e, &req.path))?;
        if req.truncate {
            file.set_len(req.offset + req.data.len() as u64)
                .map_err(|e| io_reply(e, &req.path))?;
        }
        if req.offset == 0 {
            self.chown_new(&file);
        }
        Ok(())
    }

    pub fn stat(&self, path: &str, follow: bool) -> FileResult<FileStat> {
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = self.open(path, flags, 0)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno_reply(e, path))?;
        Ok(FileStat {
            kind: kind_of(st.st_mode),
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        })
    }

    /// `mkdir -p`: every missing component is created beneath the root.
    pub fn make_dir(&self, path: &str, mode: u32) -> FileResult<()> {
        let (root, rest) = self.locate(path)?;
        let mut dir = root;
        for comp in rest.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o7777)) {
                Ok(()) => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK;
                    if let Ok(fd) = open_beneath(&dir, Path::new(name), flags, 0) {
                        self.chown_new(&File::from(fd));
                    }
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(errno_reply(e, path)),
            }
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            dir =
                open_beneath(&dir, Path::new(name), flags, 0).map_err(|e| errno_reply(e, path))?;
        }
        Ok(())
    }

    pub fn list_dir(&self, path: &str) -> FileResult<Vec<DirEntry>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = self.open(path, flags, 0)?;
        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(|e| errno_reply(e, path))?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| errno_reply(e, path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let st = rustix::fs::statat(
                &fd,
                entry.file_name(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
            let (kind, size) = match st {
                Ok(st) => (kind_of(st.st_mode), st.st_size as u64),
                Err(_) => (FileKind::Other, 0),
            };
            out.push(DirEntry { name, kind, size });
            if out.len() > 100_000 {
                return Err(reply(
                    ErrorKind::TooLarge,
                    format!("{path}: more than 100000 entries"),
                ));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn chown_new(&self, file: &File) {
        if let Some((uid, gid)) = self.owner {
            let _ = rustix::fs::fchown(
                file.as_fd(),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
        }
    }
}

fn open_beneath(
    dir: &OwnedFd,
    rest: &Path,
    flags: OFlags,
    mode: u32,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        rest,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Lexical checks: absolute, bounded, no NUL, no `..`; `.` and `//` folded.
pub fn normalize(path: &str) -> FileResult<PathBuf> {
    if path.len() > MAX_PATH_LEN {
        return Err(reply(
            ErrorKind::InvalidPath,
            format!("path longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if path.contains('\0') {
        return Err(reply(
            ErrorKind::InvalidPath,
            "path contains a NUL byte".into(),
        ));
    }
    if !path.starts_with('/') {
        return Err(reply(
            ErrorKind::InvalidPath,
            format!("{path}: path must be absolute"),
        ));
    }
    let mut out = PathBuf::from("/");
    for comp in Path::new(path).components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(reply(
                    ErrorKind::InvalidPath,
                    format!("{path}: path contains '..'"),
                ));
            }
            Component::Normal(c) => out.push(c),
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn kind_of(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// What a non-regular file is, in words.
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFLNK => "a symlink",
        libc::S_IFDIR => "a directory",
        _ => "not a regular file",
    }
}

fn not_regular(path: &str, what: &str) -> ErrorReply {
    let message = if what == "not a regular file" {
        format!("{path}: not a regular file")
    } else {
        format!("{path}: is {what}, not a regular file")
    };
    reply(ErrorKind::NotRegularFile, message)
}

pub fn reply(kind: ErrorKind, message: String) -> ErrorReply {
    ErrorReply { kind, message }
}

fn errno_reply(e: Errno, path: &str) -> ErrorReply {
    let kind = match e {
        Errno::NOENT => ErrorKind::NotFound,
        Errno::ACCESS | Errno::PERM | Errno::ROFS => ErrorKind::PermissionDenied,
        Errno::XDEV => {
            return reply(
                ErrorKind::OutsideRoots,
                format!("{path}: a symlink in the path leads outside the allowed roots"),
            );
        }
        Errno::LOOP => ErrorKind::InvalidPath,
        Errno::EXIST => ErrorKind::AlreadyExists,
        Errno::NOTDIR => ErrorKind::NotADirectory,
        Errno::ISDIR => ErrorKind::IsADirectory,
        Errno::FBIG | Errno::NOSPC | Errno::DQUOT => ErrorKind::TooLarge,
        _ => ErrorKind::Io,
    };
    reply(kind, format!("{path}: {}", std::io::Error::from(e)))
}

fn io_reply(e: std::io::Error, path: &str) -> ErrorReply {
    match e.raw_os_error() {
        Some(n) => errno_reply(Errno::from_raw_os_error(n), path),
        None => reply(ErrorKind::Io, format!("{path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn normalize_rules() {
        assert_eq!(
            normalize("/workspace//a/./b").unwrap(),
            PathBuf::from("/workspace/a/b")
        );
        assert_eq!(normalize("rel").unwrap_err().kind, ErrorKind::InvalidPath);
        assert_eq!(
            normalize("/workspace/../etc").unwrap_err().kind,
            ErrorKind::InvalidPath
        );
        assert_eq!(normalize("/a\0b").unwrap_err().kind, ErrorKind::InvalidPath);
        assert_eq!(
            normalize(&"/a".repeat(3000)).unwrap_err().kind,
            ErrorKind::InvalidPath
        );
    }

    #[test]
    fn confine_matches_whole_components_and_prefers_nested_roots() {
        let roots = Roots::new(&["/workspace/data/".into()], None);
        let (root, rest) = roots.confine("/workspace//data/./x").unwrap();
        assert_eq!(
            (root, rest.as_path()),
            (Path::new("/workspace/data"), Path::new("x"))
        );
        let (root, rest) = roots.confine("/tmp").unwrap();
        assert_eq!(
            (root, rest.as_os_str().is_empty()),
            (Path::new("/tmp"), true)
        );
        assert_eq!(
            roots.confine("/workspacex/a").unwrap_err().kind,
            ErrorKind::OutsideRoots
        );
        assert_eq!(
            roots.confine("/tmp/../etc").unwrap_err().kind,
            ErrorKind::InvalidPath
        );
    }

    fn roots_in(dir: &Path) -> Roots {
        Roots {
            roots: vec![dir.to_path_buf()],
            owner: None,
        }
    }

    #[test]
    fn confinement_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("root");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(tmp.path().join("secret"), b"x").unwrap();
        let roots = roots_in(&base);
        let p = |s: &str| format!("{}/{s}", base.display());

        roots.make_dir(&p("a/b/c"), 0o755).unwrap();
        let data: Vec<u8> = (0..=255).collect();
        let req = husk_protocol::WriteFile {
            path: p("a/b/c/f.bin"),
            offset: 0,
            data: data.clone(),
            mode: 0o600,
            truncate: true,
        };
        roots.write(&req).unwrap();
        assert_eq!(
            roots.read(&p("a/b/c/f.bin"), 0, 1 << 20).unwrap(),
            (data.clone(), true)
        );
        assert_eq!(
            roots.read(&p("a/b/c/f.bin"), 250, 3).unwrap(),
            (data[250..253].to_vec(), false)
        );
        let st = roots.stat(&p("a/b/c/f.bin"), true).unwrap();
        assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 256, 0o600));
        assert_eq!(roots.list_dir(&p("a/b/c")).unwrap()[0].name, "f.bin");

        std::os::unix::fs::symlink("../secret", base.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join("abs")).unwrap();
        std::os::unix::fs::symlink("a/b/c/f.bin", base.join("inside")).unwrap();
        assert_eq!(
            roots.read(&p("up"), 0, 10).unwrap_err().kind,
            ErrorKind::OutsideRoots
        );
        assert_eq!(
            roots.read(&p("abs"), 0, 10).unwrap_err().kind,
            ErrorKind::OutsideRoots
        );
        assert_eq!(roots.read(&p("inside"), 0, 3).unwrap().0, vec![0, 1, 2]);
        assert_eq!(roots.stat(&p("up"), false).unwrap().kind, FileKind::Symlink);
        assert_eq!(
            roots.read("/etc/passwd", 0, 10).unwrap_err().kind,
            ErrorKind::OutsideRoots
        );
        assert_eq!(
            roots.read(&p("nope"), 0, 10).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            roots.read(&p("a"), 0, 10).unwrap_err().kind,
            ErrorKind::IsADirectory
        );
    }

    /// Runs `f` on a thread and fails (instead of hanging the test run)
    /// when it has not returned within 20 s.
    fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("file operation hung (blocking open of a FIFO?)")
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let fifo = base.join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        let p = fifo.to_string_lossy().into_owned();
        let check = |e: ErrorReply| {
            assert_eq!(e.kind, ErrorKind::NotRegularFile, "{e}");
            assert_eq!(e.message, format!("{p}: is a FIFO, not a regular file"));
        };
        // No writer: a blocking open for reading would wait forever.
        let (b, q) = (base.clone(), p.clone());
        check(within_20s(move || roots_in(&b).read(&q, 0, 10)).unwrap_err());
        // No reader: a non-blocking open for writing fails with ENXIO.
        let (b, q) = (base.clone(), p.clone());
        let write = move || {
            let req = husk_protocol::WriteFile {
                path: q.clone(),
                offset: 0,
                data: b"x".to_vec(),
                mode: 0o644,
                truncate: true,
            };
            roots_in(&b).write(&req)
        };
        check(within_20s(write.clone()).unwrap_err());
        let (b, q) = (base.clone(), p.clone());
        check(within_20s(move || roots_in(&b).open_output(&q).map(drop)).unwrap_err());
        // With a reader waiting, the open succeeds but nothing is written.
        let reader = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        check(within_20s(write).unwrap_err());
        let mut buf = [0u8; 8];
        let got = std::io::Read::read(&mut &reader, &mut buf);
        // End of file (the refused writer came and went) or nothing yet:
        // either way, no byte reached the reader.
        assert!(
            matches!(&got, Ok(0))
                || matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{got:?}"
        );
        // Stat and listing still see it.
        let roots = roots_in(&base);
        assert_eq!(roots.stat(&p, true).unwrap().kind, FileKind::Other);
        assert_eq!(roots.list_dir(&base.to_string_lossy()).unwrap().len(), 1);
    }
}
