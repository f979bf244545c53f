//! torchrun-style environment variables as config overrides: RANK, WORLD_SIZE, MASTER_ADDR,
//! MASTER_PORT, NODE_ADDR map to `distributed.*`, LOCAL_RANK to `device` (the GPU this process
//! drives). They lay over the YAML file; `--set` and the `--rank`-style flags lay over them.

use crate::error::{Error, Result};

/// (variable, config key, numeric?)
const VARS: [(&str, &str, bool); 6] = [
    ("RANK", "distributed.rank", true),
    ("WORLD_SIZE", "distributed.world_size", true),
    ("LOCAL_RANK", "device", true),
    ("MASTER_ADDR", "distributed.master_addr", false),
    ("MASTER_PORT", "distributed.master_port", true),
    ("NODE_ADDR", "distributed.node_addr", false),
];

/// `KEY=VALUE` overrides from the variables `get` finds (`std::env::var` in the binary).
pub fn sets(get: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (var, key, numeric) in VARS {
        let Some(v) = get(var) else { continue };
        let v = v.trim().to_string();
        if numeric && v.parse::<u64>().is_err() {
            return Err(Error::Flag {
                flag: format!("environment variable {var}"),
                msg: format!("{v:?} is not a non-negative integer (it sets {key})"),
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
    }
}
