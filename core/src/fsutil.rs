//! Crash-safe file writing: a reader never sees a torn file, a killed writer never leaves one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed into place.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path.partial`, fsyncs, and renames it to `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = partial_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// 64-bit FNV-1a: a small hash that is stable across Rust versions and platforms (unlike std's
/// `DefaultHasher`), for cache keys, config hashes and data-set fingerprints.
#[derive(Debug, Clone)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Hashes a string with its length first, so that consecutive fields cannot run together.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv64::new().bytes(bytes).value()
}

/// The root of flowlens's caches (latents, the demo's language-model prior): `$FLOWLENS_CACHE`,
/// else `$XDG_CACHE_HOME/flowlens`, else `~/.cache/flowlens`, else `.flowlens-cache`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOWLENS_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("flowlens");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache").join("flowlens");
    }
    PathBuf::from(".flowlens-cache")
}

/// Fsyncs every file in `dir` (not recursive) and the folder itself.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// The temporary name this process builds the cache folder `dir` under: `<dir>.partial-<pid>`.
/// Folders of processes that died while building are removed first ([`clean_stale_partials`]).
pub fn partial_dir(dir: &Path) -> PathBuf {
    if let Some(parent) = dir.parent() {
        clean_stale_partials(parent);
    }
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    PathBuf::from(name)
}

/// Removes the `*.partial-<pid>` folders in `parent` whose process no longer runs (a build that
/// was killed); a folder of a live process is left alone. Where the platform cannot tell which
/// processes run (no `/proc`), nothing is removed.
pub fn clean_stale_partials(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once(".partial-")
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Builds a folder under the temporary name `tmp` with `build`, fsyncs it and renames it to
/// `dir` (replacing an older `dir`). When `build`, the sync or the rename fails, `tmp` is
/// removed and the error returned: a failure (a full disk among them) leaves nothing behind.
pub fn build_dir<E>(
    tmp: &Path,
    dir: &Path,
    build: impl FnOnce(&Path) -> Result<(), E>,
    io: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    let result = (|| {
        let _ = std::fs::remove_dir_all(tmp);
        std::fs::create_dir_all(tmp).map_err(&io)?;
        build(tmp)?;
        sync_dir(tmp).map_err(&io)?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(tmp, dir).map_err(&io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

/// Moves a folder built under a temporary name (`tmp`) into place at `dir`, where a complete
/// `dir` holds the file `marker` (written last). An incomplete `dir` (a crashed build, a
/// partial copy) is replaced; a complete one that another process published first is kept and
/// `tmp` dropped.
pub fn publish_dir(tmp: &Path, dir: &Path, marker: &str) -> std::io::Result<()> {
    let complete = |d: &Path| d.join(marker).is_file();
    if !complete(dir) && dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if complete(dir) {
        return std::fs::remove_dir_all(tmp);
    }
    match std::fs::rename(tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if complete(dir) => std::fs::remove_dir_all(tmp),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_whose_build_fails_leaves_nothing_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        let (tmp, dir) = (root.path().join("x.partial"), root.path().join("x"));
        let full = build_dir(
            &tmp,
            &dir,
            |t| {
                std::fs::write(t.join("a"), b"half")?;
                Err(std::io::Error::from_raw_os_error(28))
            },
            |e| e,
        )
        .unwrap_err();
        assert!(
            full.to_string().contains("No space left on device"),
            "{full}"
        );
        assert!(!tmp.exists() && !dir.exists());
        build_dir(&tmp, &dir, |t| std::fs::write(t.join("a"), b"all"), |e| e).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"all");
        assert!(!tmp.exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn partial_folders_of_dead_processes_are_cleaned_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        // A pid above the kernel's limit never runs.
        let dead = root.path().join("key.partial-4194305");
        let live = root
            .path()
            .join(format!("other.partial-{}", std::process::id()));
        for d in [&dead, &live] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mine = partial_dir(&root.path().join("key"));
        assert!(!dead.exists(), "a dead build's folder is removed");
        assert!(live.exists(), "a running build's folder stays");
        assert!(mine.ends_with(format!("key.partial-{}", std::process::id())));
    }
}
