//! Which installed PostgreSQL the embedded cluster runs from.
//!
//! Debian's packages put each major version's server under `/usr/lib/postgresql/<major>/bin` and
//! its extensions under `/usr/share/postgresql/<major>/extension`, and several majors can be
//! installed side by side. plume takes the newest one that has pg_partman (PostgreSQL 15, 16 and 17
//! are supported; pg_partman 4.7 and 5.x both work), unless `PLUME_PG_BIN_DIR` names a bin
//! directory explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that names the server's bin directory explicitly.
pub const BIN_DIR_ENV: &str = "PLUME_PG_BIN_DIR";

/// Where Debian's `postgresql-<major>` packages put one directory per major version.
pub const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// What to install when nothing fits, for the Debian releases plume is tested on.
pub const INSTALL_HINT: &str = "apt-get install postgresql-15 postgresql-15-partman (Debian 12) or postgresql-17 postgresql-17-partman (Debian 13)";

/// The bin directory the embedded cluster runs from: `PLUME_PG_BIN_DIR` when set, otherwise the
/// newest major under [`DEBIAN_ROOT`] that has pg_partman, otherwise the newest with a server at
/// all (so that starting it explains that pg_partman is missing), otherwise a path that does not
/// exist (so that starting it explains what to install).
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    find_bin_dir(Path::new(DEBIAN_ROOT)).unwrap_or_else(|| Path::new(DEBIAN_ROOT).join("17/bin"))
}

/// The bin directory for the cluster whose files are in `pgdata`: `PLUME_PG_BIN_DIR` when set;
/// for a cluster that exists, the server of the major that made it (its `PG_VERSION`) when that is
/// still installed, since a newer server cannot open its files (moving a cluster to a newer major is
/// `pg_upgrade`'s work); otherwise [`default_bin_dir`].
pub fn bin_dir_for_cluster(pgdata: &Path) -> PathBuf {
    if std::env::var_os(BIN_DIR_ENV).is_some_and(|dir| !dir.is_empty()) {
        return default_bin_dir();
    }
    own_bin_dir(Path::new(DEBIAN_ROOT), pgdata).unwrap_or_else(default_bin_dir)
}

/// The installed bin directory under `root` of the major that made the cluster in `pgdata`.
fn own_bin_dir(root: &Path, pgdata: &Path) -> Option<PathBuf> {
    let major: u32 = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let bin = root.join(major.to_string()).join("bin");
    bin.join("postgres").exists().then_some(bin)
}

/// The bin directory of the newest major under `root` that has pg_partman, or else of the newest
/// that has a server.
pub fn find_bin_dir(root: &Path) -> Option<PathBuf> {
    let installed = installed_majors(root);
    installed
        .iter()
        .rev()
        .find(|(_, bin)| partman_control(bin).is_some_and(|control| control.exists()))
        .or(installed.last())
        .map(|(_, bin)| bin.clone())
}

/// The majors under `root` that have a server binary, oldest first, with their bin directories.
pub fn installed_majors(root: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut majors: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
}

/// Where pg_partman's control file is for the server in `bin_dir`: in the share directory
/// `pg_config` reports, or, without `pg_config` (it comes in a separate package on Debian), in
/// Debian's layout beside it. `None` when neither can be told.
pub fn partman_control(bin_dir: &Path) -> Option<PathBuf> {
    let share_dir = Command::new(bin_dir.join("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .or_else(|| debian_share_dir(bin_dir))?;
    Some(share_dir.join("extension/pg_partman.control"))
}

/// `/usr/share/postgresql/<major>` for `/usr/lib/postgresql/<major>/bin`.
fn debian_share_dir(bin_dir: &Path) -> Option<PathBuf> {
    let version_dir = bin_dir.parent()?;
    let major = version_dir.file_name()?;
    let usr = version_dir.parent()?.parent()?.parent()?;
    Some(usr.join("share/postgresql").join(major))
}

/// The major version of the server in `bin_dir`, from Debian's layout (`.../<major>/bin`).
pub fn major_of(bin_dir: &Path) -> Option<u32> {
    bin_dir.parent()?.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_server(root: &Path, major: &str, with_partman: bool) -> PathBuf {
        let bin = root.join("lib/postgresql").join(major).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("postgres"), "").unwrap();
        let extension = root.join("share/postgresql").join(major).join("extension");
        std::fs::create_dir_all(&extension).unwrap();
        if with_partman {
            std::fs::write(extension.join("pg_partman.control"), "").unwrap();
        }
        bin
    }

    #[test]
    fn majors_are_sorted_numerically_and_need_a_server() {
        let root = tempfile::tempdir().unwrap();
        fake_server(root.path(), "9", false);
        fake_server(root.path(), "17", false);
        fake_server(root.path(), "15", false);
        std::fs::create_dir_all(root.path().join("lib/postgresql/16/bin")).unwrap();
        let majors: Vec<u32> = installed_majors(&root.path().join("lib/postgresql"))
            .into_iter()
            .map(|(major, _)| major)
            .collect();
        assert_eq!(majors, vec![9, 15, 17]);
    }

    #[test]
    fn the_newest_server_with_pg_partman_is_chosen() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("lib/postgresql");
        assert_eq!(find_bin_dir(&lib), None);
        let fifteen = fake_server(root.path(), "15", true);
        let seventeen = fake_server(root.path(), "17", false);
        assert_eq!(find_bin_dir(&lib), Some(fifteen), "17 lacks pg_partman");
        std::fs::write(
            root.path()
                .join("share/postgresql/17/extension/pg_partman.control"),
            "",
        )
        .unwrap();
        assert_eq!(find_bin_dir(&lib), Some(seventeen.clone()));
        let only_servers = tempfile::tempdir().unwrap();
        fake_server(only_servers.path(), "16", false);
        let newest = fake_server(only_servers.path(), "17", false);
        assert_eq!(
            find_bin_dir(&only_servers.path().join("lib/postgresql")),
            Some(newest),
            "none has pg_partman: the newest, so that starting it says what is missing"
        );
    }

    #[test]
    fn an_existing_cluster_runs_from_the_major_that_made_it() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("lib/postgresql");
        let fifteen = fake_server(root.path(), "15", true);
        fake_server(root.path(), "17", true);
        let pgdata = root.path().join("pgdata");
        assert_eq!(own_bin_dir(&lib, &pgdata), None, "a new cluster");
        std::fs::create_dir_all(&pgdata).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(own_bin_dir(&lib, &pgdata), Some(fifteen));
        std::fs::write(pgdata.join("PG_VERSION"), "16\n").unwrap();
        assert_eq!(own_bin_dir(&lib, &pgdata), None, "16 is not installed");
    }

    #[test]
    fn without_pg_config_the_control_file_is_looked_for_in_debians_layout() {
        let root = tempfile::tempdir().unwrap();
        let bin = fake_server(root.path(), "17", true);
        let control = partman_control(&bin).unwrap();
        assert_eq!(
            control,
            root.path()
                .join("share/postgresql/17/extension/pg_partman.control")
        );
        assert!(control.exists());
        assert_eq!(major_of(&bin), Some(17));
    }
}
