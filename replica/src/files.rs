//! How a node's data files are created: readable by the node's user alone. A replica's
//! log and checkpoints hold every value its clients wrote, so directories are made 0700
//! and files 0600, whatever the process umask says.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of a data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a data file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents, each 0700.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// Creates `path` for writing, 0600; fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn data_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        create_dir_all(&dir).unwrap();
        for d in [t.path().join("a"), dir.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, DIR_MODE);
        }
        create(&dir.join("x")).unwrap();
        create_new(&dir.join("y")).unwrap();
        assert!(create_new(&dir.join("y")).is_err());
        for f in ["x", "y"] {
            assert_eq!(std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777, FILE_MODE);
        }
    }
}
