//! Receiving the host's descriptors on standard input.
//!
//! The host starts the launcher with `posix_spawn` (a vfork: no copy of
//! husk's page tables), which cannot place descriptors at chosen numbers.
//! So it sends them all, in order, in one `SCM_RIGHTS` message on a socket
//! that is the launcher's stdin; the launcher puts them at 3, 4, … and
//! replaces stdin with `/dev/null`.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use super::sys::{SysError, SysResult};

use husk_protocol::launch::{HANDOVER_TAG as TAG, MAX_HANDOVER_FDS as MAX_FDS};

fn fail(what: &str, err: impl Into<std::io::Error>) -> SysError {
    SysError {
        what: what.into(),
        err: err.into(),
    }
}

/// Takes the descriptors from stdin and puts them at 3, 4, ….
pub fn receive() -> SysResult {
    let stdin = std::io::stdin();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut bytes = [0u8; 64];
    let msg = rustix::net::recvmsg(
        stdin.as_fd(),
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| fail("receiving the host's descriptors on stdin", e))?;
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(fail(
            "receiving the host's descriptors",
            std::io::Error::other(format!("more than {MAX_FDS}")),
        ));
    }
    if &bytes[..msg.bytes] != TAG {
        return Err(fail(
            "receiving the host's descriptors",
            std::io::Error::other("stdin did not carry them"),
        ));
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    place(fds)?;
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| fail("opening /dev/null", e))?;
    // SAFETY: fd 0 is replaced in place; the socket it was is owned by no
    // Rust object (std's stdin handle only borrows it).
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(fail("replacing stdin", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Puts `fds` at 3, 4, … in order (not close-on-exec, like inherited ones).
fn place(fds: Vec<OwnedFd>) -> SysResult {
    // First above every target, so no dup2 overwrites a source.
    let above = (3 + fds.len()).max(16) as i32;
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, above))
        .collect::<Result<_, _>>()
        .map_err(|e| fail("moving the host's descriptors", e))?;
    drop(fds);
    for (i, fd) in high.iter().enumerate() {
        let target = 3 + i as i32;
        // SAFETY: the targets are free (the received descriptors were
        // closed above) or stale numbers no Rust object owns.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(fail(
                &format!("placing a descriptor at {target}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
