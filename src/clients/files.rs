//! Writing a config file (the gateway's TOML, a client's JSON) so that a crash or a full
//! disk never leaves half a file, and the one it replaces stays beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `text` to `path` through a temporary file in the same folder and a rename. An
/// existing file is first copied to `PATH.bak-SECONDS` (returned), and the new one keeps
/// its permissions; a new file is readable by its owner only, since these files hold keys.
pub fn replace(path: &Path, text: &str) -> Result<Option<PathBuf>, String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let existing = std::fs::metadata(path).ok();
    let backup = match &existing {
        Some(_) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let backup = PathBuf::from(format!("{}.bak-{stamp}", path.display()));
            std::fs::copy(path, &backup).map_err(|e| format!("{}: {e}", backup.display()))?;
            Some(backup)
        }
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
        let mode = existing.map(|m| m.permissions().mode()).unwrap_or(0o600);
        std::fs::set_permissions(&temp.0, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{shown}: {e}"))?;
    }
    std::fs::rename(&temp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp.0);
        format!("{shown}: {e}")
    })?;
    Ok(backup)
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }
        // Nothing else is left in the folder.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
