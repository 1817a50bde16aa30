//! Repairs the `.` and `..` entries that fatfs 0.3.6 writes into every new
//! directory (rafalh/rust-fatfs#117, fixed upstream but unreleased): it puts
//! a long-name entry in front of each, so the first two slots are not `.` and
//! `..`. fsck.fat, Windows chkdsk and some firmware reject that. The repair
//! moves `.` and `..` into slots 0 and 1 and marks the two slots they leave
//! behind as deleted, which keeps every other entry where it was.

const SLOT: usize = 32;
const ATTR_OFFSET: usize = 11;
const ATTR_LONG_NAME: u8 = 0x0f;
const ATTR_DIRECTORY: u8 = 0x10;
const DELETED: u8 = 0xe5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// Where things are in a FAT12/16 volume, from its boot sector.
struct Geometry {
    root_dir: usize,
    root_entries: usize,
    data: usize,
    cluster_size: usize,
}

impl Geometry {
    fn read(volume: &[u8]) -> Result<Self, String> {
        let u16_at = |at: usize| -> Result<usize, String> {
            volume
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or_else(|| "volume shorter than a boot sector".to_string())
        };
        let bytes_per_sector = u16_at(11)?;
        let sectors_per_cluster = usize::from(volume[13]);
        let reserved = u16_at(14)?;
        let fats = usize::from(volume[16]);
        let root_entries = u16_at(17)?;
        let sectors_per_fat = u16_at(22)?;
        if sectors_per_fat == 0 || root_entries == 0 {
            return Err("FAT32 volumes are not supported here".into());
        }
        let root_dir = (reserved + fats * sectors_per_fat) * bytes_per_sector;
        let root_bytes = (root_entries * SLOT).div_ceil(bytes_per_sector) * bytes_per_sector;
        Ok(Geometry {
            root_dir,
            root_entries,
            data: root_dir + root_bytes,
            cluster_size: bytes_per_sector * sectors_per_cluster,
        })
    }

    fn cluster(&self, cluster: usize) -> std::ops::Range<usize> {
        let start = self.data + (cluster - 2) * self.cluster_size;
        start..start + self.cluster_size
    }
}

/// Fixes every directory below the root. Directories are expected to fit in
/// their first cluster (ours hold a handful of entries); a larger one is
/// reported rather than half-repaired.
pub fn repair(volume: &mut [u8]) -> Result<(), String> {
    let geometry = Geometry::read(volume)?;
    let root = geometry.root_dir..geometry.root_dir + geometry.root_entries * SLOT;
    let mut pending = subdirectories(&volume[root]);
    while let Some(cluster) = pending.pop() {
        let range = geometry.cluster(cluster);
        let dir = volume
            .get_mut(range)
            .ok_or_else(|| format!("directory cluster {cluster} is outside the volume"))?;
        if dir[dir.len() - SLOT] != 0 {
            return Err(format!("directory at cluster {cluster} spans clusters"));
        }
        fix_dots(dir);
        pending.extend(subdirectories(dir));
    }
    Ok(())
}

/// First clusters of the subdirectories listed in `dir`, skipping `.`/`..`.
fn subdirectories(dir: &[u8]) -> Vec<usize> {
    dir.chunks_exact(SLOT)
        .take_while(|slot| slot[0] != 0)
        .filter(|slot| {
            slot[0] != DELETED
                && slot[ATTR_OFFSET] != ATTR_LONG_NAME
                && slot[ATTR_OFFSET] & ATTR_DIRECTORY != 0
                && &slot[..11] != DOT
                && &slot[..11] != DOTDOT
        })
        .map(|slot| usize::from(u16::from_le_bytes([slot[26], slot[27]])))
        .filter(|&cluster| cluster >= 2)
        .collect()
}

fn fix_dots(dir: &mut [u8]) {
    let is_long = |dir: &[u8], i: usize| dir[i * SLOT + ATTR_OFFSET] == ATTR_LONG_NAME;
    let named = |dir: &[u8], i: usize, name: &[u8; 11]| &dir[i * SLOT..i * SLOT + 11] == name;
    if !(is_long(dir, 0) && named(dir, 1, DOT) && is_long(dir, 2) && named(dir, 3, DOTDOT)) {
        return;
    }
    dir.copy_within(SLOT..2 * SLOT, 0);
    dir.copy_within(3 * SLOT..4 * SLOT, SLOT);
    for slot in dir[2 * SLOT..4 * SLOT].chunks_exact_mut(SLOT) {
        slot.fill(0);
        slot[0] = DELETED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::{FatClock, DEFAULT_EPOCH};
    use crate::fat::{build, FatFile, VolumeSpec};

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
        let root = geometry.root_dir..geometry.root_dir + geometry.root_entries * SLOT;
        let mut pending = subdirectories(&volume.bytes[root]);
        let mut seen = 0;
        while let Some(cluster) = pending.pop() {
            let dir = &volume.bytes[geometry.cluster(cluster)];
            assert_eq!(&dir[..11], DOT);
            assert_eq!(&dir[SLOT..SLOT + 11], DOTDOT);
            assert_eq!(usize::from(u16::from_le_bytes([dir[26], dir[27]])), cluster);
            pending.extend(subdirectories(dir));
            seen += 1;
        }
        assert_eq!(seen, 4, "a, a/b, a/b/c, d");
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
