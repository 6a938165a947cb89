//! The loopback interface, brought up in a fresh network namespace (a
//! micro-VM's, or a namespace sandbox's) so sandbox processes and the port
//! tunnel can use 127.0.0.1.

/// Sets `lo` up (and running); its 127.0.0.1 comes with it.
pub fn loopback_up() -> std::io::Result<()> {
    let err = |what: &str| {
        let e = std::io::Error::last_os_error();
        std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    // SAFETY: socket takes integers only.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(err("opening a socket to configure lo"));
    }
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own
    // (its flags member, which these ioctls use); `sock` is ours.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(err("reading the flags of lo"))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(err("bringing lo up"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `sock` is our own descriptor, closed once.
    unsafe { libc::close(sock) };
    result
}
