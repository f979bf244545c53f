//! torchrun-style environment variables as config overrides: RANK, WORLD_SIZE, MASTER_ADDR,
//! MASTER_PORT, NODE_ADDR map to `distributed.*`, LOCAL_RANK to `device` (the GPU this process
//! drives). They lay over the YAML file; `--set` and the `--rank`-style flags lay over them.

use crate::error::{Error, Result};

/// (variable, config key, the largest value of a number; `None`: a host)
const VARS: [(&str, &str, Option<u64>); 6] = [
    ("RANK", "distributed.rank", Some(u64::MAX)),
    ("WORLD_SIZE", "distributed.world_size", Some(u64::MAX)),
    ("LOCAL_RANK", "device", Some(u64::MAX)),
    ("MASTER_ADDR", "distributed.master_addr", None),
    // Checked here: past it, the `--set` it becomes was blamed, a flag nobody typed.
    ("MASTER_PORT", "distributed.master_port", Some(u16::MAX as u64)),
    ("NODE_ADDR", "distributed.node_addr", None),
];

/// `KEY=VALUE` overrides from the variables `get` finds (`std::env::var` in the binary).
pub fn sets(get: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (var, key, max) in VARS {
        let Some(v) = get(var) else { continue };
        let v = v.trim().to_string();
        let numeric = max.is_some();
        if let Some(max) = max
            && !v.parse::<u64>().is_ok_and(|n| n <= max)
        {
            let what = if max == u64::MAX {
                "a non-negative integer".to_string()
            } else {
                format!("a whole number from 0 to {max}")
            };
            return Err(Error::Flag {
                flag: format!("environment variable {var}"),
                msg: format!("{v:?} is not {what} (it sets {key})"),
            });
        }
        if !numeric && (v.is_empty() || v.contains(['/', ' ', '"'])) {
            return Err(Error::Flag {
                flag: format!("environment variable {var}"),
                msg: format!("{v:?} is not a host name or address (it sets {key})"),
            });
        }
        out.push(if numeric {
            format!("{key}={v}")
        } else {
            format!("{key}=\"{v}\"")
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_variables() {
        let env = |k: &str| match k {
            "RANK" => Some("1".to_string()),
            "WORLD_SIZE" => Some("2".to_string()),
            "MASTER_ADDR" => Some("10.0.0.1".to_string()),
            _ => None,
        };
        assert_eq!(
            sets(env).unwrap(),
            vec![
                "distributed.rank=1",
                "distributed.world_size=2",
                "distributed.master_addr=\"10.0.0.1\""
            ]
        );
        let bad = sets(|k| (k == "RANK").then(|| "x".to_string()))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("RANK"), "{bad}");
        let port = sets(|k| (k == "MASTER_PORT").then(|| "99999".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            port.contains(
                "environment variable MASTER_PORT: \"99999\" is not a whole number from 0 to 65535"
            ),
            "{port}"
        );
    }
}
