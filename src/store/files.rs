//! The SQLite file holds upstream headers and environments (secrets) and the keys'
//! digests: its directory is made 0700 when the gateway creates it, and the file 0600
//! (SQLite gives its -wal and -shm files the database file's mode).

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates the database's directory (0700) and file (0600) if they do not exist yet.
/// What already exists keeps its mode: the operator chose it.
pub fn prepare_sqlite(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_database_is_private_and_an_existing_one_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data/nested/omni.db");
        prepare_sqlite(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        prepare_sqlite(&path).unwrap();
        assert_eq!(mode(&path), 0o640);
    }
}
