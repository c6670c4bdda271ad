//! `flowlens study lock` (the design and the pre-registered analysis frozen before any rating
//! is collected) and `flowlens study unblind` (the key opened, recorded in the audit log).

use std::path::Path;

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::design::StudyToml;
use super::files::{Lock, StudyDir, sha256_hex, utc_now, write_json};

/// Locks the study: study.toml's design must be the one its images and assignments were made
/// from; its `[analysis]` section may have been edited until now. Locking twice with the same
/// file is a no-op; with a changed file it is refused.
pub fn lock(root: &Path) -> Result<Lock> {
    let study = StudyDir::open(root)?;
    let spec = StudyToml::read(&study.toml())?;
    let manifest = study.read_manifest()?;
    ensure!(
        sha256_hex(spec.design_json().as_bytes()) == manifest.design_sha256,
        "{}: the design (systems, prompts, sampler, raters, protocol or criteria) changed since `flowlens study new` made the images and assignments; only [analysis] may be edited before locking. Restore the file, or create a new study in a fresh directory",
        study.toml().display()
    );
    let toml_sha256 = sha256_hex(&std::fs::read(study.toml())?);
    if let Some(old) = study.read_lock()? {
        ensure!(
            old.toml_sha256 == toml_sha256,
            "{} was locked at {} and has changed since: a locked study's pre-registration cannot change (restore the file; deviations belong in the report)",
            study.toml().display(),
            old.locked
        );
        return Ok(old);
    }
    let lock = Lock {
        toml_sha256,
        manifest_sha256: study.manifest_sha256()?,
        locked: utc_now(),
    };
    write_json(&study.lock(), &lock)?;
    study.audit_line(&format!(
        "lock: study.toml sha256 {}, manifest sha256 {}",
        lock.toml_sha256, lock.manifest_sha256
    ))?;
    Ok(lock)
}

/// The study file of a locked study, checked against the lock.
pub fn check_locked(study: &StudyDir, lock: &Lock) -> Result<StudyToml> {
    let bytes = std::fs::read(study.toml())?;
    ensure!(
        sha256_hex(&bytes) == lock.toml_sha256,
        "{} changed after `study lock` ({}): restore it; a locked study's design and pre-registered analysis are frozen",
        study.toml().display(),
        lock.locked
    );
    ensure!(
        study.manifest_sha256()? == lock.manifest_sha256,
        "{} changed after `study lock`: the assignments raters work from are frozen",
        study.manifest().display()
    );
    StudyToml::read(&study.toml())
}

/// `unblinded.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unblinded {
    pub time: String,
    pub who: String,
}

/// Opens the key for analysis: records who and when in unblinded.json and the audit log.
pub fn unblind(root: &Path) -> Result<Unblinded> {
    let study = StudyDir::open(root)?;
    study.require_lock("unblind")?;
    if study.unblinded().is_file() {
        return super::files::read_json(&study.unblinded());
    }
    if !study.key().is_file() {
        bail!(
            "{} is missing: the study cannot be unblinded",
            study.key().display()
        );
    }
    let u = Unblinded {
        time: utc_now(),
        who: super::files::who(),
    };
    write_json(&study.unblinded(), &u)?;
    study.audit_line("unblind: the key is open for analysis")?;
    Ok(u)
}

/// Whether the study has been unblinded.
pub fn is_unblinded(study: &StudyDir) -> bool {
    study.unblinded().is_file()
}
