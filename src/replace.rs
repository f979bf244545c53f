//! What `--overwrite` may remove: an output directory that holds nothing but what colossus
//! writes there. `train.out_dir: .` with a `run_name` of `src`, or `prepare --out ~/data`, once
//! deleted whatever the directory held; a directory with anything else in it is now refused,
//! naming what it holds, and the user moves it out or picks another place.

use std::path::Path;

use crate::error::{Error, Result};

/// Refuse when `dir` holds an entry `ours` does not recognize; `what` names what colossus
/// keeps there ("a run's output"), `elsewhere` how to pick another place. A `dir` that does not
/// exist or is not a directory passes: there is nothing of anyone's in it to lose.
pub fn check_only_ours(dir: &Path, ours: impl Fn(&str) -> bool, what: &str, elsewhere: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut foreign: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !ours(name))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown = foreign.len().min(5);
    let more = match foreign.len() - shown {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(Error::input(
        dir,
        format!(
            "--overwrite removes a directory only when it holds nothing but {what}, and this one \
             also holds {}{more}; move those out, or {elsewhere}",
            foreign[..shown].join(", ")
        ),
    ))
}

/// `name` is `prefix` followed by one or more ASCII digits.
pub fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A hidden staging entry, `.NAME.tmp-PID` (`checkpoint::atomic`), left by a killed writer.
pub fn staging(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_and_staging_names() {
        assert!(numbered("step-000012", "step-") && numbered("-3", "-"));
        for (name, prefix) in [
            ("step-", "step-"),
            ("step-1a", "step-"),
            ("tep-1", "step-"),
            ("-", "-"),
        ] {
            assert!(!numbered(name, prefix), "{name}");
        }
        assert!(staging(".step-000012.tmp-42") && staging(".latest.tmp-42"));
        assert!(!staging("step-000012.tmp-42") && !staging(".git"));
    }

    /// A directory of only recognized entries passes; one more entry is refused by name, with
    /// the count of the rest past five; a missing directory passes.
    #[test]
    fn foreign_entries_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("colossus-replace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("step-1")).unwrap();
        std::fs::write(dir.join("latest"), "step-1").unwrap();
        let ours = |n: &str| n == "latest" || numbered(n, "step-");
        check_only_ours(&dir, ours, "a run", "elsewhere").unwrap();
        for k in 0..7 {
            std::fs::write(dir.join(format!("mine-{k}")), "").unwrap();
        }
        let err = check_only_ours(&dir, ours, "a run", "go elsewhere")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine-0, mine-1, mine-2, mine-3, mine-4 and 2 more"),
            "{err}"
        );
        assert!(
            err.contains("nothing but a run") && err.ends_with("go elsewhere"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        check_only_ours(&dir, ours, "a run", "elsewhere").unwrap();
    }
}
