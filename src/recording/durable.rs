//! Durable file operations: the only place in grabd that creates, renames or removes a
//! file that must survive a power cut.
//!
//! The contract: write to a temporary name in the same directory, fsync the file,
//! rename it into place, fsync the directory. Removals and directory creations fsync the
//! parent directory too, so a crash leaves either the old state or the new one. None of
//! these may run on a capture thread (they can stall for seconds on an SD card).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// The temporary name a file is written under before it is renamed to `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync a file's data and metadata.
pub fn sync_file(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("open for fsync", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// fsync a directory so that the entries created, renamed or removed in it survive.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| Error::io("open directory for fsync", dir, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// fsync `tmp`, rename it to `dest`, fsync the destination directory (and the source
/// directory when it differs).
pub fn persist(tmp: &Path, dest: &Path) -> Result<()> {
    sync_file(tmp)?;
    fs::rename(tmp, dest).map_err(|e| Error::io("rename", dest, e))?;
    sync_dir(parent_of(dest))?;
    if parent_of(tmp) != parent_of(dest) {
        sync_dir(parent_of(tmp))?;
    }
    Ok(())
}

/// Write `bytes` to `path` durably (temp name, fsync, rename, directory fsync).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        drop(file);
        persist(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create a directory (and missing parents) and fsync the parent of each one created.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// Remove a file and fsync its directory. A file that is already gone is not an error.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Remove a directory tree and fsync its parent.
pub fn remove_dir_all(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove directory", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_atomically_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn write_file_into_missing_dir_fails_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/a.json");
        let err = write_file(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn create_dir_all_refuses_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(create_dir_all(&file).is_err());
        assert!(create_dir_all(&file.join("sub")).is_err());
    }

    #[test]
    fn create_and_remove_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
        remove_dir_all(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
        remove_dir_all(&dir.path().join("a")).unwrap();
        remove_file(&dir.path().join("nothing")).unwrap();
    }
}
