//! Bounded file reads: license and key files are small, so a huge file is refused by size
//! instead of being read into memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The outcome of a bounded read.
pub(crate) enum Capped {
    /// The whole file, at most the cap.
    Fits(Vec<u8>),
    /// The file's size, over the cap; nothing was read.
    TooLarge(u64),
}

/// Reads `path` if it holds at most `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: usize) -> std::io::Result<Capped> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size > cap as u64 {
        return Ok(Capped::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow after the size check: read one byte past the cap to notice.
    file.take(cap as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > cap {
        return Ok(Capped::TooLarge(bytes.len() as u64));
    }
    Ok(Capped::Fits(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_cap_and_reports_the_size_beyond_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert!(matches!(read_capped(&path, 5).unwrap(), Capped::Fits(b) if b == b"12345"));
        assert!(matches!(
            read_capped(&path, 4).unwrap(),
            Capped::TooLarge(5)
        ));
    }
}
