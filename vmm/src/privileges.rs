//! Giving up root. init starts each vmm as root in a chroot-style jail
//! without a user namespace, so a memory-safety bug hit while still root
//! could leave the jail. Everything that needs privilege is opened first
//! (see `builder::open_host`); this runs next, while the process still
//! has a single thread, and only then are the kernel images parsed and
//! the devices and vCPUs created.

use std::io;

use hvcontract::launch::Ids;

/// Capability numbers are below 64 for as far as the kernel ABI goes
/// (`CAP_LAST_CAP` is 40 in Linux 6.12); the loop stops at the first one
/// the kernel does not know.
const CAP_LIMIT: libc::c_ulong = 64;

/// Why the vmm could not give up its privileges: the host's problem
/// (or a caller without the right to change ids).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what}: {source}")]
    Os { what: String, source: io::Error },
    #[error("cannot drop capability {cap} from the bounding set: {source}")]
    BoundingSet {
        cap: libc::c_ulong,
        source: io::Error,
    },
    #[error("privilege drop did not stick")]
    DidNotStick,
}

fn os_error(what: &str) -> Error {
    Error::Os {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// Switches to `ids` if given, then sets no_new_privs, which
/// every thread created later inherits and seccomp needs.
///
/// setuid and friends change every thread of the process (libc
/// broadcasts them), but there is only one thread at this point anyway:
/// virtio workers and vCPUs are created after this.
pub fn drop_to(ids: Option<Ids>) -> Result<(), Error> {
    if let Some(Ids { uid, gid }) = ids {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root && uid != 0 {
            // Needs CAP_SETPCAP, so before setuid. With an empty bounding
            // set no later execve (there is none, but a compromised vmm
            // might try one of a setuid file) can regain a capability.
            clear_bounding_set()?;
        }
        switch_ids(uid, gid)?;
    }
    set_no_new_privs()
}

fn clear_bounding_set() -> Result<(), Error> {
    for cap in 0..CAP_LIMIT {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                return Ok(()); // past the last capability this kernel has
            }
            return Err(Error::BoundingSet { cap, source: e });
        }
    }
    Ok(())
}

fn switch_ids(uid: u32, gid: u32) -> Result<(), Error> {
    // SAFETY: plain syscalls with valid arguments. KEEPCAPS is off by
    // default; clearing it makes sure setuid to a non-zero uid empties the
    // permitted, effective and ambient sets. Groups and gid go first,
    // while we still have the right to change them.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(os_error("clear keepcaps"));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os_error("drop supplementary groups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(os_error(&format!("set gid {gid}")));
        }
        if libc::setuid(uid) != 0 {
            return Err(os_error(&format!("set uid {uid}")));
        }
        if uid != 0 && libc::setuid(0) == 0 {
            return Err(Error::DidNotStick);
        }
    }
    Ok(())
}

fn set_no_new_privs() -> Result<(), Error> {
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_error("set no_new_privs"));
    }
    Ok(())
}
