//! Stamps every file and directory entry of a FAT volume with the build
//! time. fatfs already does so, but the syslinux installer writes through
//! mtools, which takes the time from the system clock (or SOURCE_DATE_EPOCH)
//! and converts it with the local time zone; restamping makes the volume
//! independent of both, and of the mtools version.

use super::clock::FatClock;
use super::dirs::{self, DirError, ATTR_OFFSET, ATTR_VOLUME_ID, DELETED};

pub fn restamp(volume: &mut [u8], clock: &FatClock) -> Result<(), DirError> {
    let stamp = clock.encoded();
    for range in dirs::directories(volume)? {
        let dir = volume
            .get_mut(range.clone())
            .ok_or(DirError::Outside(range))?;
        for slot in dirs::slots_mut(dir).take_while(|slot| slot[0] != 0) {
            // Long-name slots carry no times, and the volume label keeps the
            // zero times fatfs gives it.
            if slot[ATTR_OFFSET] & ATTR_VOLUME_ID != 0 {
                continue;
            }
            // The installer leaves deleted entries behind (it copies to the
            // root and moves the file); their times mean nothing.
            if slot[0] == DELETED {
                slot[13..20].fill(0);
                slot[22..26].fill(0);
                continue;
            }
            slot[13] = stamp.hundredths;
            slot[14..16].copy_from_slice(&stamp.time.to_le_bytes());
            slot[16..18].copy_from_slice(&stamp.date.to_le_bytes());
            slot[18..20].copy_from_slice(&stamp.date.to_le_bytes());
            slot[22..24].copy_from_slice(&stamp.time.to_le_bytes());
            slot[24..26].copy_from_slice(&stamp.date.to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TEST_EPOCH as DEFAULT_EPOCH;
    use crate::{build, FatFile, VolumeSpec};

    fn volume(clock: &'static FatClock) -> Vec<u8> {
        let files = [
            FatFile {
                path: "syslinux/syslinux.cfg",
                data: b"x",
            },
            FatFile {
                path: "vmlinuz",
                data: b"y",
            },
        ];
        let spec = VolumeSpec {
            label: "T",
            volume_id: 1,
            min_size: 1 << 20,
            slack: 0,
        };
        build(&files, &spec, clock).unwrap().bytes
    }

    #[test]
    fn matches_what_fatfs_writes() {
        // 2023-11-14T22:13:20Z: an odd second, to cover the 10 ms field.
        let clock = FatClock::leak(1_700_000_001);
        let built = volume(clock);
        let mut restamped = built.clone();
        restamp(&mut restamped, clock).unwrap();
        assert!(built == restamped, "restamping a fatfs volume is a no-op");
    }

    #[test]
    fn replaces_foreign_times() {
        let clock = FatClock::leak(DEFAULT_EPOCH);
        let expected = volume(clock);
        let mut other = volume(FatClock::leak(1_600_000_000));
        assert!(other != expected);
        restamp(&mut other, clock).unwrap();
        assert!(other == expected);
    }
}
