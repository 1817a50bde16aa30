//! Opens the virtio devices a guest definition asks for, whichever
//! transport then carries them.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};

use hvconfig::guest::{DiskSource, GuestConfig};

use super::{Error, HandedFds};
use crate::devices::virtio::{Block, Net, Rng, Tap, VirtioDevice};

/// Takes ownership of an inherited fd, checking first that it is open.
fn adopt(fd: RawFd, what: &str) -> Result<File, Error> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::FdNotOpen {
            what: what.into(),
            fd,
        });
    }
    // SAFETY: the fd is open and was handed to us to own; nothing else in
    // this process uses it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn check_indexes(
    fds: &BTreeMap<usize, RawFd>,
    count: usize,
    flag: &'static str,
) -> Result<(), Error> {
    match fds.keys().find(|&&i| i >= count) {
        Some(&index) => Err(Error::FdIndex { flag, index, count }),
        None => Ok(()),
    }
}

/// The devices the definition asks for, in guest order: disks (vda, vdb,
/// ...), then NICs (eth0, ...), then the RNG. Runs before the privilege
/// drop: disk paths and taps opened by name (TUNSETIFF needs
/// CAP_NET_ADMIN) may need root; nothing here reads what is in them.
pub fn open_devices(
    guest: &GuestConfig,
    fds: HandedFds,
) -> Result<Vec<Box<dyn VirtioDevice>>, Error> {
    check_indexes(fds.disks, guest.disks.len(), "--disk-fd")?;
    check_indexes(fds.taps, guest.nets.len(), "--tap-fd")?;
    let def = guest.file.display();
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (index, disk) in guest.disks.iter().enumerate() {
        let what = format!("{def}: disk {} ({})", index + 1, disk.path);
        let block = match (fds.disks.get(&index), &disk.path) {
            (Some(&fd), _) => Block::new(adopt(fd, &what)?, disk.read_only),
            (None, DiskSource::Path(path)) => Block::open(path, disk.read_only),
            (None, _) => return Err(Error::DiskLabel { what, index }),
        };
        let block = block.map_err(|source| Error::Backend {
            what: what.clone(),
            source,
        })?;
        log::debug!("{what}: {} sectors", block.capacity_sectors());
        out.push(Box::new(block.with_id(&format!(
            "{}-{}",
            guest.name,
            index + 1
        ))));
    }
    for (index, net) in guest.nets.iter().enumerate() {
        let what = format!("{def}: net {}", index + 1);
        let tap = match (fds.taps.get(&index), &net.tap) {
            (Some(&fd), _) => Tap::from_file(adopt(fd, &what)?),
            (None, Some(name)) => Tap::open(name),
            (None, None) => return Err(Error::TapNotHanded { what, index }),
        };
        let tap = tap.map_err(|source| Error::Backend {
            what: what.clone(),
            source,
        })?;
        log::debug!("{what}: tap {}, MAC {}", tap.name(), net.mac);
        out.push(Box::new(Net::new(tap, net.mac.to_bytes())));
    }
    if guest.rng.enabled {
        out.push(Box::new(Rng::new()));
    }
    Ok(out)
}
