//! Which code a run measured: the commit of the git tree in the current directory (where the
//! default `--wharf-bin target/release/wharf` is built) and whether tracked files differed
//! from it, or the `--commit` the operator names for a broker built elsewhere.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Commit {
    /// Full commit id, or what `--commit` said; `None` outside a git tree.
    pub id: Option<String>,
    /// Tracked files were modified (`None` when not known: `--commit`, or no git).
    pub dirty: Option<bool>,
    /// `git` or `--commit`.
    pub source: String,
}

impl Commit {
    /// `abc1234`, `abc1234 (dirty)`, or `unknown`.
    pub fn short(&self) -> String {
        let id = self.id.as_deref().map_or("unknown", |id| {
            if id.len() > 12 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                &id[..12]
            } else {
                id
            }
        });
        if self.dirty == Some(true) {
            format!("{id} (dirty)")
        } else {
            id.to_string()
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit measured: `overridden` when given, else this directory's HEAD.
pub fn commit(overridden: Option<&str>) -> Commit {
    if let Some(id) = overridden {
        return Commit {
            id: Some(id.to_string()),
            dirty: None,
            source: "--commit".into(),
        };
    }
    let id = git(&["rev-parse", "HEAD"]);
    let dirty = id
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|status| !status.is_empty());
    Commit {
        id,
        dirty,
        source: "git".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_is_recorded_as_given() {
        let commit = commit(Some("v0.1.0"));
        assert_eq!(commit.id.as_deref(), Some("v0.1.0"));
        assert_eq!(commit.dirty, None);
        assert_eq!(commit.short(), "v0.1.0");
    }

    #[test]
    fn a_short_id_is_twelve_hex_digits_and_says_dirty() {
        let commit = Commit {
            id: Some("0123456789abcdef0123".into()),
            dirty: Some(true),
            source: "git".into(),
        };
        assert_eq!(commit.short(), "0123456789ab (dirty)");
        assert_eq!(Commit::default().short(), "unknown");
    }
}
