//! Repairs the `.` and `..` entries that fatfs 0.3.6 writes into every new
//! directory (rafalh/rust-fatfs#117, fixed upstream but unreleased): it puts
//! a long-name entry in front of each, so the first two slots are not `.` and
//! `..`. fsck.fat, Windows chkdsk and some firmware reject that. The repair
//! moves `.` and `..` into slots 0 and 1 and marks the two slots they leave
//! behind as deleted, which keeps every other entry where it was.

use super::dirs::{self, DirError, ATTR_LONG_NAME, ATTR_OFFSET, DELETED, DOT, DOTDOT, SLOT};

/// The first four entries of a directory, where the misplaced dot entries
/// are.
type Head = [u8; 4 * SLOT];

/// Fixes every directory below the root (the root has no dot entries).
pub fn repair(volume: &mut [u8]) -> Result<(), DirError> {
    for range in dirs::directories(volume)?.into_iter().skip(1) {
        let dir = volume
            .get_mut(range.clone())
            .ok_or(DirError::Outside(range))?;
        fix_dots(dir);
    }
    Ok(())
}

fn fix_dots(dir: &mut [u8]) {
    // A directory has at least a cluster, far more than four entries.
    let Some(head) = dir
        .get_mut(..4 * SLOT)
        .and_then(|head| <&mut Head>::try_from(head).ok())
    else {
        return;
    };
    let misplaced = head[ATTR_OFFSET] == ATTR_LONG_NAME
        && head[SLOT..SLOT + 11] == DOT[..]
        && head[2 * SLOT + ATTR_OFFSET] == ATTR_LONG_NAME
        && head[3 * SLOT..3 * SLOT + 11] == DOTDOT[..];
    if !misplaced {
        return;
    }
    head.copy_within(SLOT..2 * SLOT, 0);
    head.copy_within(3 * SLOT..4 * SLOT, SLOT);
    for slot in dirs::slots_mut(&mut head[2 * SLOT..]) {
        slot.fill(0);
        slot[0] = DELETED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirs::Geometry;
    use crate::TEST_EPOCH as DEFAULT_EPOCH;
    use crate::{build, FatClock, FatFile, VolumeSpec};

    #[test]
    fn every_directory_starts_with_dot_and_dotdot() {
        let files = [
            FatFile {
                path: "a/b/c/file.txt",
                data: b"x",
            },
            FatFile {
                path: "a/other.txt",
                data: b"y",
            },
            FatFile {
                path: "d/e.txt",
                data: b"z",
            },
        ];
        let spec = VolumeSpec {
            label: "T",
            volume_id: 1,
            min_size: 1 << 20,
            slack: 0,
        };
        let volume = build(&files, &spec, FatClock::leak(DEFAULT_EPOCH)).unwrap();
        let geometry = Geometry::read(&volume.bytes).unwrap();
        let dirs = dirs::directories(&volume.bytes).unwrap();
        assert_eq!(dirs.len(), 5, "root, a, a/b, a/b/c, d");
        for range in &dirs[1..] {
            let dir = &volume.bytes[range.clone()];
            assert_eq!(&dir[..11], DOT);
            assert_eq!(&dir[SLOT..SLOT + 11], DOTDOT);
            let cluster = usize::from(u16::from_le_bytes([dir[26], dir[27]]));
            assert_eq!(geometry.cluster(cluster), *range, "`.` points at itself");
        }
    }

    #[test]
    fn leaves_correct_directories_alone() {
        let mut dir = vec![0u8; 512];
        dir[..11].copy_from_slice(DOT);
        dir[SLOT..SLOT + 11].copy_from_slice(DOTDOT);
        let before = dir.clone();
        fix_dots(&mut dir);
        assert_eq!(dir, before);
    }
}
