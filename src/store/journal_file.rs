//! The count journal's file: made preallocated, and written so that each frame costs one device
//! write and a flush. Where the filesystem allows it the file is opened `O_DIRECT | O_DSYNC`
//! and written in whole 4 KiB blocks from an aligned buffer (the block a frame continues is
//! kept in memory), which skips the page cache and its writeback; elsewhere (tmpfs) a frame is a
//! `pwrite` followed by `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::journal::{image, JournalError, Medium, CAPACITY, FILE};

/// The unit of a direct write: offsets, lengths and the buffer's address are multiples of it.
const BLOCK: usize = 4096;

/// The journal file; see the module's comment.
pub(super) struct JournalFile {
    file: File,
    path: PathBuf,
    /// Opened `O_DIRECT | O_DSYNC`.
    direct: bool,
    /// Direct writes: a buffer with room for whole blocks at an aligned start; its first block
    /// holds the file's block at `cached` as last written.
    buf: Vec<u8>,
    cached: Option<u64>,
}

/// Opens the journal file in `dir`, creating it (preallocated, synced, then renamed into
/// place, so a half-made file never carries the journal's name) when there is none.
pub(super) fn open(dir: &Path, store_id: u64) -> Result<(JournalFile, PathBuf), JournalError> {
    let path = dir.join(FILE);
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| JournalError::Io {
            path,
            action,
            source,
        }
    };
    if !path.exists() {
        let fresh = dir.join(format!("{FILE}.new"));
        let file = File::create(&fresh).map_err(io("create"))?;
        file.write_all_at(&image(store_id, CAPACITY), 0)
            .and_then(|()| file.sync_all())
            .map_err(io("create"))?;
        std::fs::rename(&fresh, &path)
            .and_then(|()| File::open(dir)?.sync_all())
            .map_err(io("create"))?;
    }
    let (file, direct) = match open_with(&path, direct_flags()) {
        Ok(file) => (file, true),
        // The filesystem does not do direct I/O (tmpfs, some network filesystems).
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            (open_with(&path, 0).map_err(io("open"))?, false)
        }
        Err(err) => return Err(io("open")(err)),
    };
    let journal = JournalFile {
        file,
        path: path.clone(),
        direct,
        buf: Vec::new(),
        cached: None,
    };
    Ok((journal, path))
}

fn open_with(path: &Path, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
}

#[cfg(target_os = "linux")]
fn direct_flags() -> i32 {
    libc::O_DIRECT | libc::O_DSYNC
}

/// Without `O_DIRECT` the file is written with `pwrite` and `fdatasync`.
#[cfg(not(target_os = "linux"))]
fn direct_flags() -> i32 {
    0
}

/// The block-aligned part of `buf`, at least `len` bytes (growing it keeps its first block).
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let start = |buf: &Vec<u8>| (BLOCK - buf.as_ptr() as usize % BLOCK) % BLOCK;
    if buf.is_empty() || buf.len() - start(buf) < len {
        let mut grown = vec![0; len.max(16 * BLOCK) + BLOCK];
        if !buf.is_empty() {
            let (old, new) = (start(buf), start(&grown));
            grown[new..new + BLOCK].copy_from_slice(&buf[old..old + BLOCK]);
        }
        *buf = grown;
    }
    let at = start(buf);
    &mut buf[at..at + len]
}

impl JournalFile {
    /// Writes `bytes` at `offset` as whole blocks: the bytes before `offset` in its block as
    /// the file has them, zeros after `bytes` (nothing beyond the write position is kept).
    fn write_direct(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let first = offset - offset % BLOCK as u64;
        let lead = (offset - first) as usize;
        let len = (lead + bytes.len()).next_multiple_of(BLOCK);
        if lead > 0 && self.cached != Some(first) {
            self.file
                .read_exact_at(aligned(&mut self.buf, BLOCK), first)?;
            self.cached = Some(first);
        }
        let region = aligned(&mut self.buf, len);
        region[lead..lead + bytes.len()].copy_from_slice(bytes);
        region[lead + bytes.len()..].fill(0);
        self.file.write_all_at(region, first)?;
        region.copy_within(len - BLOCK.., 0);
        self.cached = Some(first + (len - BLOCK) as u64);
        Ok(())
    }
}

impl Medium for JournalFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        // A buffered read: direct reads need aligned buffers and lengths.
        std::fs::read(&self.path)
    }

    fn write_durably(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.direct {
            // With O_DSYNC the write returns once the data is on the device.
            return self.write_direct(offset, bytes);
        }
        self.file.write_all_at(bytes, offset)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::frame;

    #[test]
    fn frames_written_directly_read_back_whole_across_blocks_and_after_a_restart_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, path) = open(dir.path(), 7).unwrap();
        let frames: Vec<Vec<u8>> = (0..200u64)
            .map(|seq| {
                let mut bytes = vec![];
                frame::encode(seq + 1, &Default::default(), None, &mut bytes);
                // Some frames are longer than a block.
                bytes.resize(bytes.len() + (seq as usize % 7) * 1000, 0);
                bytes
            })
            .collect();
        let mut offset = 4096u64;
        for bytes in &frames {
            file.write_durably(offset, bytes).unwrap();
            offset += bytes.len() as u64;
        }
        let on_disk = std::fs::read(&path).unwrap();
        let mut offset = 4096;
        for bytes in &frames {
            assert_eq!(&on_disk[offset..offset + bytes.len()], &bytes[..]);
            offset += bytes.len();
        }
        assert_eq!(on_disk.len(), CAPACITY);

        // Back at the start: the first frame is replaced, what followed it in its block is
        // zeroed, the blocks after are as they were.
        file.write_durably(4096, &frames[3]).unwrap();
        let again = std::fs::read(&path).unwrap();
        assert_eq!(&again[4096..4096 + frames[3].len()], &frames[3][..]);
        assert!(again[4096 + frames[3].len()..8192].iter().all(|&b| b == 0));
        assert_eq!(&again[8192..], &on_disk[8192..]);

        // A handle opened later continues a frame in the middle of a block it did not write.
        drop(file);
        let (mut file, _) = open(dir.path(), 7).unwrap();
        let at = 4096 + frames[3].len() as u64;
        file.write_durably(at, &frames[5]).unwrap();
        let last = std::fs::read(&path).unwrap();
        assert_eq!(&last[4096..4096 + frames[3].len()], &frames[3][..]);
        assert_eq!(
            &last[at as usize..at as usize + frames[5].len()],
            &frames[5][..]
        );
    }
}
