//! virtio-rng (entropy device) fed from the host's getrandom(2).

use std::io::{self, Write};

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::Writer;

use super::complaints::Complaints;
use super::queue::{Chain, QueueContext};
use super::{DeviceError, QueueProcessor, VirtioDevice};

pub const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per request; the guest's hw_random core asks for
/// far less, and a hostile guest should not make us fill gigabytes.
const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;
const CHUNK: usize = 4096;

/// A virtio entropy device.
#[derive(Default)]
pub struct Rng;

impl Rng {
    pub fn new() -> Rng {
        Rng
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn processor(&mut self) -> Box<dyn QueueProcessor> {
        Box::new(RngProcessor {
            buf: vec![0; CHUNK],
            complaints: Complaints::new("virtio-rng"),
        })
    }
}

struct RngProcessor {
    buf: Vec<u8>,
    complaints: Complaints,
}

impl QueueProcessor for RngProcessor {
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.pop(index)? {
            let head = chain.head_index();
            let written = self.fill(ctx, chain);
            ctx.add_used(index, head, written)?;
        }
        Ok(())
    }
}

impl RngProcessor {
    fn fill(&mut self, ctx: &QueueContext, chain: Chain) -> u32 {
        let mut out = match Writer::new(ctx.mem(), chain) {
            Ok(w) => w,
            Err(e) => {
                self.complaints
                    .warn(format_args!("request with bad buffers: {e}"));
                return 0;
            }
        };
        let mut left = out.available_bytes().min(MAX_BYTES_PER_REQUEST);
        while left > 0 {
            let n = left.min(self.buf.len());
            let Some(chunk) = self.buf.get_mut(..n) else {
                break;
            };
            if let Err(e) = getrandom(chunk) {
                log::error!("virtio-rng: getrandom failed: {e}");
                break;
            }
            if out.write_all(chunk).is_err() {
                break;
            }
            left -= n;
        }
        // At most MAX_BYTES_PER_REQUEST.
        u32::try_from(out.bytes_written()).unwrap_or(0)
    }
}

/// Fills `buf` with /dev/urandom semantics: never blocks, even before the
/// host's entropy pool is initialised at early boot.
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        // The system call itself, not libc's getrandom(): the Rust standard
        // library declares that symbol weak, and in the LTO'd static musl
        // binary the merged weak reference stayed unresolved, so the call
        // jumped to address 0 (the rng worker died with SIGSEGV).
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`,
        // which is a valid, exclusively borrowed buffer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                rest.as_mut_ptr(),
                rest.len(),
                libc::GRND_INSECURE,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += usize::try_from(ret).unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
// Test drivers split 64-bit addresses into 32-bit registers and build
// small test patterns and lengths: the truncation is what they mean.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_support::driver::{Driver, DATA};

    #[test]
    fn fills_guest_buffers() {
        let mut d = Driver::new(Box::new(Rng::new()));
        d.start(0, 1, 16);
        d.write_mem(DATA, &[0; 256]);
        // Two buffers in one chain, plus a device-readable one that must be
        // left alone.
        d.write_mem(DATA + 0x1000, &[0x5a; 64]);
        d.submit(
            0,
            &[
                (DATA, 100, true),
                (DATA + 0x1000, 64, false),
                (DATA + 100, 156, true),
            ],
        );
        assert_eq!(d.wait_used(0), (0, 256));
        let first = d.read_mem(DATA, 256);
        assert!(
            first.iter().filter(|&&b| b == 0).count() < 16,
            "not random: {first:?}"
        );
        assert_eq!(d.read_mem(DATA + 0x1000, 64), vec![0x5a; 64]);
        d.submit(0, &[(DATA, 256, true)]);
        d.wait_used(0);
        assert_ne!(d.read_mem(DATA, 256), first);
    }

    #[test]
    fn large_and_read_only_requests_are_bounded() {
        let mut d = Driver::new(Box::new(Rng::new()));
        d.start(0, 1, 16);
        d.submit(0, &[(DATA, 1 << 20, true)]);
        assert_eq!(d.wait_used(0).1, MAX_BYTES_PER_REQUEST as u32);
        d.submit(0, &[(DATA, 64, false)]);
        assert_eq!(d.wait_used(0).1, 0);
        d.submit(0, &[(u64::MAX - 10, 64, true)]);
        assert_eq!(d.wait_used(0).1, 0);
    }
}
