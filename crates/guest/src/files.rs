//! File RPCs confined to a set of allowed roots.
//!
//! A request path must be absolute, free of `..`, and inside one of the
//! roots (`/workspace`, `/home/sandbox`, `/tmp` and what the host adds). The
//! part below the root is then opened with `openat2(RESOLVE_BENEATH)` on the
//! root directory, so the *kernel* refuses any symlink (absolute, or relative
//! with `..`) that would leave the root, including races where a link is
//! swapped in between checks.

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

    /// Reads up to `len` bytes at `offset`; `eof` when the file ends there.
    pub fn read(&self, path: &str, offset: u64, len: u32) -> FileResult<(Vec<u8>, bool)> {
        let fd = self.open(path, OFlags::RDONLY | OFlags::CLOEXEC, 0)?;
        let file = File::from(fd);
        let size = file.metadata().map_err(|e| io_reply(e, path))?.len();
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(reply(
                ErrorKind::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
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
        let fd = self.open(&req.path, flags, req.mode & 0o7777)?;
        let file = File::from(fd);
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
                    if let Ok(fd) = open_beneath(&dir, Path::new(name), OFlags::RDONLY, 0) {
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
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
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
}
