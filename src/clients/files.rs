//! Writing a config file (the gateway's TOML, a client's JSON) so that a crash or a full
//! disk never leaves half a file, and the one it replaces stays beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `text` to `path` through a temporary file in the same folder and a rename. An
/// existing file is first copied to `PATH.bak-SECONDS` (returned; `-2`, `-3`... when that
/// name is taken, so no backup is ever overwritten). A symbolic link is followed: its
/// target is replaced, the link stays. The file ends readable by its owner only (its
/// other permissions kept), since these files hold keys.
pub fn replace(path: &Path, text: &str) -> Result<Option<PathBuf>, String> {
    let path = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let path = path.as_path();
    let shown = path.display();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let existing = std::fs::metadata(path).ok();
    let backup = match &existing {
        Some(_) => Some(backup(path)?),
        None => None,
    };
    let mut temp = tempfile_in(&dir)?;
    temp.1
        .write_all(text.as_bytes())
        .and_then(|()| temp.1.sync_all())
        .map_err(|e| format!("{shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = existing.map(|m| m.permissions().mode()).unwrap_or(0o600) & !0o077;
        std::fs::set_permissions(&temp.0, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{shown}: {e}"))?;
    }
    std::fs::rename(&temp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp.0);
        format!("{shown}: {e}")
    })?;
    Ok(backup)
}

/// Copies `path` to a backup name nobody has taken yet.
fn backup(path: &Path) -> Result<PathBuf, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut source = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for n in 1..1000u32 {
        let name = match n {
            1 => format!("{}.bak-{stamp}", path.display()),
            n => format!("{}.bak-{stamp}-{n}", path.display()),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&name) {
            Ok(mut file) => {
                std::io::copy(&mut source, &mut file)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| format!("{name}: {e}"))?;
                return Ok(PathBuf::from(name));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    Err(format!("{}: no free backup name", path.display()))
}

/// A new file in `dir` that nobody else has opened.
fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File), String> {
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            ".omni-bridge-{}-{}-{attempt}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!("{}: no free temporary name", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_leaves_a_backup_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/c.json");
        assert_eq!(replace(&path, "one").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        let backup = replace(&path, "two").unwrap().expect("a backup");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        // Within the same second: a second backup, the first kept.
        let second = replace(&path, "three").unwrap().expect("a backup");
        assert_ne!(second, backup);
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            // Group and others lose what they had: the file holds keys now.
            assert_eq!(mode, 0o600);
        }
        // Nothing else is left in the folder.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_file_is_replaced_where_it_points() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-mcp.json");
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("mcp.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace(&link, "new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    }
}
