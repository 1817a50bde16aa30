//! Finds every directory of a FAT12/16 volume built by `fat::build` so that the
//! raw-entry fixes (`dots`, `times`) can work on the bytes directly.

use std::ops::Range;

pub const SLOT: usize = 32;
pub const ATTR_OFFSET: usize = 11;
pub const ATTR_LONG_NAME: u8 = 0x0f;
pub const ATTR_VOLUME_ID: u8 = 0x08;
pub const ATTR_DIRECTORY: u8 = 0x10;
pub const DELETED: u8 = 0xe5;
pub const DOT: &[u8; 11] = b".          ";
pub const DOTDOT: &[u8; 11] = b"..         ";

/// One 32-byte directory entry. Entries are handled as arrays so that
/// every field access is checked at compile time.
pub type Slot = [u8; SLOT];

/// The 32-byte entries of `dir`; a partial entry at the end is ignored.
pub fn slots(dir: &[u8]) -> impl Iterator<Item = &Slot> {
    dir.chunks_exact(SLOT).filter_map(|c| c.try_into().ok())
}

pub fn slots_mut(dir: &mut [u8]) -> impl Iterator<Item = &mut Slot> {
    dir.chunks_exact_mut(SLOT).filter_map(|c| c.try_into().ok())
}

/// Why the directories of a volume could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    #[error("volume shorter than a boot sector")]
    Short,
    #[error("FAT32 volumes are not supported here")]
    Fat32,
    #[error("root directory is outside the volume")]
    RootOutside,
    #[error("directory cluster {0} is outside the volume")]
    ClusterOutside(usize),
    #[error("directory at cluster {0} spans clusters")]
    SpansClusters(usize),
    #[error("directory at bytes {0:?} is outside the volume")]
    Outside(Range<usize>),
}

/// Where things are in a FAT12/16 volume, from its boot sector.
pub struct Geometry {
    root_dir: usize,
    root_entries: usize,
    data: usize,
    cluster_size: usize,
}

impl Geometry {
    pub fn read(volume: &[u8]) -> Result<Self, DirError> {
        let u8_at = |at: usize| {
            volume
                .get(at)
                .copied()
                .map(usize::from)
                .ok_or(DirError::Short)
        };
        let u16_at = |at: usize| {
            volume
                .get(at..at + 2)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(|b| usize::from(u16::from_le_bytes(b)))
                .ok_or(DirError::Short)
        };
        let bytes_per_sector = u16_at(11)?;
        let sectors_per_cluster = u8_at(13)?;
        let reserved = u16_at(14)?;
        let fats = u8_at(16)?;
        let root_entries = u16_at(17)?;
        let sectors_per_fat = u16_at(22)?;
        if sectors_per_fat == 0 || root_entries == 0 {
            return Err(DirError::Fat32);
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

    pub fn root(&self) -> Range<usize> {
        self.root_dir..self.root_dir + self.root_entries * SLOT
    }

    /// Cluster numbers start at 2; smaller ones (never passed by
    /// `subdirectories`) map to the first data cluster.
    pub fn cluster(&self, cluster: usize) -> Range<usize> {
        let start = self.data + cluster.saturating_sub(2) * self.cluster_size;
        start..start + self.cluster_size
    }
}

/// Byte ranges of every directory: the root first, then each subdirectory.
/// Subdirectories are expected to fit in their first cluster (ours hold a
/// handful of entries); a larger one is reported rather than half-handled.
pub fn directories(volume: &[u8]) -> Result<Vec<Range<usize>>, DirError> {
    let geometry = Geometry::read(volume)?;
    let root = geometry.root();
    let mut pending = subdirectories(volume.get(root.clone()).ok_or(DirError::RootOutside)?);
    let mut found = vec![root];
    while let Some(cluster) = pending.pop() {
        let range = geometry.cluster(cluster);
        let dir = volume
            .get(range.clone())
            .ok_or(DirError::ClusterOutside(cluster))?;
        if slots(dir).last().is_some_and(|slot| slot[0] != 0) {
            return Err(DirError::SpansClusters(cluster));
        }
        pending.extend(subdirectories(dir));
        found.push(range);
    }
    Ok(found)
}

/// The in-use 32-byte entries of `dir`, up to the end marker.
pub fn entries(dir: &[u8]) -> impl Iterator<Item = &Slot> {
    slots(dir)
        .take_while(|slot| slot[0] != 0)
        .filter(|slot| slot[0] != DELETED)
}

/// First clusters of the subdirectories listed in `dir`, skipping `.`/`..`.
pub fn subdirectories(dir: &[u8]) -> Vec<usize> {
    entries(dir)
        .filter(|slot| {
            slot[ATTR_OFFSET] != ATTR_LONG_NAME
                && slot[ATTR_OFFSET] & ATTR_DIRECTORY != 0
                && slot[..11] != DOT[..]
                && slot[..11] != DOTDOT[..]
        })
        .map(|slot| usize::from(u16::from_le_bytes([slot[26], slot[27]])))
        .filter(|&cluster| cluster >= 2)
        .collect()
}
