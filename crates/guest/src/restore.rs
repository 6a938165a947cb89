//! Template mode: the guest of a micro-VM that the host saves as a
//! snapshot and restores into many sandboxes.
//!
//! A template (`husk.template` on the kernel command line) reads no secret.
//! Once set up, it tells the host it is parked and waits for one
//! [`Identity`] frame on its control port — the host saves the VM during
//! that wait. Every restored copy resumes there, and takes on the identity
//! the host sends it before it serves anything: the session secret (the
//! template never had one, so nothing from the template authenticates),
//! host randomness mixed into and credited to the kernel RNG followed by a
//! forced reseed (restored copies share the template's RNG state until
//! then), the host's wall-clock time (the guest clock stood still while
//! the snapshot sat on disk), and the sandbox id, shown as `husk.id=` in
//! `/proc/cmdline` as on a cold boot.
//!
//! The file shown over `/proc/cmdline` is bind-mounted by the template,
//! before it parks; a restored copy only writes its own id into that file.
//! Every restored copy starts with an empty TCG translation cache, so
//! each kernel path it takes is translated afresh; the mount's is not one
//! of them.

use husk_protocol::restore::{Identity, Parked, RESTORE_VERSION};
use husk_protocol::{Envelope, MAX_FRAME_LEN, decode_frame, encode_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The kernel command line word that makes a guest a template.
pub const TEMPLATE_ARG: &str = "husk.template";

/// Whether this boot is a template's.
pub fn is_template(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == TEMPLATE_ARG)
}

/// Says "parked" and waits for the identity. Reads exactly one frame, so
/// the `Hello` the host sends right behind it stays unread for the session.
pub async fn park<S>(port: &mut S) -> Result<Identity, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let parked = Envelope {
        id: 0,
        msg: Parked {
            restore_version: RESTORE_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    let mut buf = Vec::new();
    encode_frame(&parked, &mut buf).map_err(|e| format!("encoding Parked: {e}"))?;
    port.write_all(&buf)
        .await
        .map_err(|e| format!("sending Parked: {e}"))?;
    port.flush()
        .await
        .map_err(|e| format!("sending Parked: {e}"))?;
    read_identity(port).await
}

/// Reads one frame and insists that it is a valid [`Identity`].
async fn read_identity<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Identity, String> {
    let mut frame = vec![0u8; 4];
    rd.read_exact(&mut frame)
        .await
        .map_err(|e| format!("waiting for the identity: {e}"))?;
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(format!("identity frame of {len} bytes is too large"));
    }
    frame.resize(4 + len, 0);
    rd.read_exact(&mut frame[4..])
        .await
        .map_err(|e| format!("reading the identity: {e}"))?;
    let (env, _) = decode_frame::<Identity>(&frame)
        .map_err(|e| format!("expected an identity first, refusing to serve: {e}"))?
        .ok_or("identity frame is incomplete")?;
    env.msg
        .validate()
        .map_err(|e| format!("refusing the identity: {e}"))?;
    Ok(env.msg)
}

/// Applies everything but the secret (which the session takes). Any
/// failure means this copy must not serve: it would share state with its
/// siblings.
pub fn adopt(identity: &Identity, cmdline: &CmdlineView) -> Result<(), String> {
    reseed_rng(&identity.entropy)?;
    set_clock(identity.unix_secs, identity.unix_nanos)?;
    cmdline.show_id(&identity.sandbox_id)
}

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// `struct rand_pool_info` with room for the identity's entropy.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; husk_protocol::restore::IDENTITY_ENTROPY_LEN],
}

fn reseed_rng(entropy: &[u8]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut info = RandPoolInfo {
        entropy_count: (entropy.len() * 8) as libc::c_int,
        buf_size: entropy.len() as libc::c_int,
        buf: [0; husk_protocol::restore::IDENTITY_ENTROPY_LEN],
    };
    info.buf.copy_from_slice(entropy);
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("opening /dev/urandom: {e}"))?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose buf_size bytes of
    // buf follow the header; `info` is laid out that way (repr(C)) and
    // lives across the call.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY, &info) } != 0 {
        return Err(format!(
            "adding entropy: {}",
            std::io::Error::last_os_error()
        ));
    }
    info.buf.fill(0);
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(format!(
            "reseeding the kernel RNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_clock(secs: u64, nanos: u32) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we pass and nothing else.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "setting the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The root-owned, read-only file the template mounts over
/// `/proc/cmdline`, so that a restored copy can show its own id there
/// (where a cold boot has it) by writing it into the file.
pub struct CmdlineView {
    /// The template's own command line.
    template: String,
    /// Where the id is in the file as the template wrote it (its command
    /// line without `husk.template`, with its own id), when the line has
    /// exactly one `husk.id=`.
    id_at: Option<std::ops::Range<usize>>,
}

impl CmdlineView {
    const PATH: &'static str = "/run/.husk-cmdline";

    /// Mounts the template's command line, already in the form a restored
    /// copy shows, over `/proc/cmdline`.
    pub fn prepare(cmdline: &str) -> Result<Self, String> {
        let path = Self::PATH;
        let (view, shown) = Self::new(cmdline);
        std::fs::write(path, shown).map_err(|e| format!("writing {path}: {e}"))?;
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o444))
            .map_err(|e| format!("chmod {path}: {e}"))?;
        rustix::mount::mount_bind(path, "/proc/cmdline")
            .map_err(|e| format!("mounting {path} over /proc/cmdline: {e}"))?;
        Ok(view)
    }

    /// The view of `cmdline`, and what the template's file shows.
    fn new(cmdline: &str) -> (Self, String) {
        let ids: Vec<&str> = cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("husk.id="))
            .collect();
        let own = ids.first().copied().unwrap_or_default();
        let shown = restored_cmdline(cmdline, own);
        let id_at = match ids.len() {
            1 => {
                // The only word of `shown` that starts with it.
                let word = shown
                    .split(' ')
                    .scan(0, |at, w| {
                        let start = *at;
                        *at += w.len() + 1;
                        Some((start, w))
                    })
                    .find(|(_, w)| w.starts_with("husk.id="));
                word.map(|(start, _)| {
                    let from = start + "husk.id=".len();
                    from..from + own.len()
                })
            }
            _ => None,
        };
        let view = Self {
            template: cmdline.to_string(),
            id_at,
        };
        (view, shown)
    }

    /// Shows `id` in place of the template's. Runs before anything of the
    /// sandbox's does, so the path is still the file the template mounted.
    /// An id as long as the template's (husk's ids are) is written over
    /// it in place: no truncation, no new page, fewer kernel paths for a
    /// restored copy to translate.
    fn show_id(&self, id: &str) -> Result<(), String> {
        let path = Self::PATH;
        let err = |e: std::io::Error| format!("showing the new id in /proc/cmdline ({path}): {e}");
        if let Some(at) = self.id_at.as_ref().filter(|at| at.len() == id.len()) {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(err)?;
            return file
                .write_all_at(id.as_bytes(), at.start as u64)
                .map_err(err);
        }
        std::fs::write(path, restored_cmdline(&self.template, id)).map_err(err)
    }
}

fn restored_cmdline(cmdline: &str, id: &str) -> String {
    let words: Vec<String> = cmdline
        .split_whitespace()
        .filter(|w| *w != TEMPLATE_ARG)
        .map(|w| match w.strip_prefix("husk.id=") {
            Some(_) => format!("husk.id={id}"),
            None => w.to_string(),
        })
        .collect();
    words.join(" ") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::Secret;
    use husk_protocol::restore::IDENTITY_ENTROPY_LEN;

    fn identity() -> Identity {
        Identity {
            secret: Secret([3; 32]),
            entropy: vec![7; IDENTITY_ENTROPY_LEN],
            unix_secs: 1_700_000_000,
            unix_nanos: 0,
            sandbox_id: "feedface".into(),
        }
    }

    #[test]
    fn template_is_recognised_as_a_whole_word() {
        assert!(is_template("quiet husk.template husk.id=1"));
        assert!(!is_template("quiet husk.templates husk.id=1"));
    }

    #[test]
    fn the_view_knows_where_the_id_is() {
        let (v, shown) = CmdlineView::new("console=ttyS0 husk.id=aaaa husk.template quiet\n");
        assert_eq!(shown, "console=ttyS0 husk.id=aaaa quiet\n");
        assert_eq!(&shown[v.id_at.clone().unwrap()], "aaaa");
        let (first, shown) = CmdlineView::new("husk.id=abc quiet");
        assert_eq!(&shown[first.id_at.clone().unwrap()], "abc");
        // Not fooled by a word that merely contains "husk.id=".
        let (odd, shown) = CmdlineView::new("xhusk.id=zz husk.id=abc");
        assert_eq!(&shown[odd.id_at.clone().unwrap()], "abc");
        // No id, or two: no place to write one id over.
        assert!(CmdlineView::new("quiet").0.id_at.is_none());
        assert!(CmdlineView::new("husk.id=a husk.id=b").0.id_at.is_none());
    }

    #[test]
    fn cmdline_gets_the_new_id() {
        assert_eq!(
            restored_cmdline("console=ttyS0 husk.id=aaaa husk.template quiet\n", "bbbb"),
            "console=ttyS0 husk.id=bbbb quiet\n"
        );
    }

    #[tokio::test]
    async fn parks_then_reads_exactly_one_identity() {
        let (mut guest, mut host) = tokio::io::duplex(4096);
        let mut out = Vec::new();
        encode_frame(
            &Envelope {
                id: 0,
                msg: identity(),
            },
            &mut out,
        )
        .unwrap();
        out.extend_from_slice(b"next frame");
        host.write_all(&out).await.unwrap();
        let got = park(&mut guest).await.unwrap();
        assert_eq!(got, identity());
        let mut parked = [0u8; 64];
        let n = host.read(&mut parked).await.unwrap();
        let (env, _) = decode_frame::<Parked>(&parked[..n]).unwrap().unwrap();
        assert_eq!(env.msg.restore_version, RESTORE_VERSION);
        // What followed the identity is still there for the session.
        let mut rest = [0u8; 10];
        guest.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"next frame");
    }

    /// The template has no secret: a `Hello` (or anything but an identity)
    /// in the identity's place is refused, whatever secret it carries.
    #[tokio::test]
    async fn a_hello_instead_of_an_identity_is_refused() {
        use husk_protocol::{Hello, HostMsg};
        let (mut guest, mut host) = tokio::io::duplex(4096);
        let mut out = Vec::new();
        let hello = HostMsg::Hello(Hello {
            min_version: 1,
            max_version: 3,
            secret: Secret([0; 32]),
            extra_roots: Vec::new(),
        });
        encode_frame(&Envelope { id: 0, msg: hello }, &mut out).unwrap();
        host.write_all(&out).await.unwrap();
        let err = park(&mut guest).await.unwrap_err();
        assert!(err.contains("refus"), "{err}");
    }

    #[tokio::test]
    async fn an_invalid_identity_is_refused() {
        let (mut guest, mut host) = tokio::io::duplex(4096);
        let mut bad = identity();
        bad.entropy.clear();
        let mut out = Vec::new();
        encode_frame(&Envelope { id: 0, msg: bad }, &mut out).unwrap();
        host.write_all(&out).await.unwrap();
        let err = park(&mut guest).await.unwrap_err();
        assert!(err.contains("entropy"), "{err}");
    }
}
