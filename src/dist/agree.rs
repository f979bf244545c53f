//! The start-up check that every rank runs the same job: before the first step each rank
//! publishes fingerprints of its config sections and resume point (plus its process's tensor-data
//! address, for naming lost ranks later) and all compare. A rank started with another model shape,
//! batch, schedule or checkpoint is refused with an error naming the section and the ranks,
//! instead of silently averaging incompatible gradients.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use burn::tensor::backend::Backend;

use super::comm::Dist;
use crate::checkpoint::state::TrainState;
use crate::config::Config;
use crate::error::{Error, Result};

/// 48 bits of an FNV-1a hash as three f32-exact 16-bit chunks.
fn fingerprint(value: &serde_json::Value) -> [f32; 3] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.to_string().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    [
        (h & 0xffff) as f32,
        ((h >> 16) & 0xffff) as f32,
        ((h >> 32) & 0xffff) as f32,
    ]
}

/// What must be equal on every rank, by name. Paths (corpus, out_dir) may differ between machines.
fn sections(cfg: &Config, state: &TrainState) -> Vec<(&'static str, serde_json::Value)> {
    let mut train = serde_json::to_value(&cfg.train).expect("json");
    if let Some(t) = train.as_object_mut() {
        t.remove("out_dir");
        t.remove("resume");
    }
    let d = &cfg.distributed;
    vec![
        ("model", serde_json::to_value(&cfg.model).expect("json")),
        ("train", train),
        (
            "seed/data.seq_len",
            serde_json::json!([cfg.seed, cfg.data.seq_len]),
        ),
        (
            "distributed.world_size/local_ranks",
            serde_json::json!([d.world_size, d.local_ranks]),
        ),
        (
            "resume point (step, sampler cursor)",
            serde_json::json!([state.step, state.sampler]),
        ),
    ]
}

/// Check agreement; `data_addr` is this process's tensor-data address (multi-process only), which
/// the other ranks record to probe it if this rank goes silent.
pub fn check<B: Backend>(
    dist: &Dist,
    cfg: &Config,
    state: &TrainState,
    data_addr: Option<SocketAddr>,
    device: &B::Device,
) -> Result<()> {
    if dist.world == 1 {
        return Ok(());
    }
    let secs = sections(cfg, state);
    let mut mine: Vec<f32> = secs.iter().flat_map(|(_, v)| fingerprint(v)).collect();
    // Address: 4 octets and the port split in bytes (all exact in f32); 0.0.0.0:0 when unknown.
    let (ip, port) = match data_addr {
        Some(SocketAddr::V4(a)) => (a.ip().octets(), a.port()),
        _ => ([0; 4], 0),
    };
    mine.extend(ip.iter().map(|&o| o as f32));
    mine.extend([(port >> 8) as f32, (port & 0xff) as f32]);
    let all = dist.gather::<B>(&mine, device, "start-up config check")?;

    let nsec = secs.len() * 3;
    for (i, (name, _)) in secs.iter().enumerate() {
        let at = i * 3..i * 3 + 3;
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, v)| v[at.clone()] != all[0][at.clone()])
            .map(|(r, _)| r.to_string())
            .collect();
        if !differ.is_empty() {
            return Err(Error::ConfigValue {
                file: "distributed job".into(),
                key: name.to_string(),
                msg: format!(
                    "rank(s) {} disagree with rank 0 (rank {} sees this); every rank must run the same config",
                    differ.join(", "),
                    dist.rank
                ),
            });
        }
    }
    if let Some(roster) = dist.roster() {
        let local = roster.first_local..roster.first_local + roster.entered.len();
        let mut remote: Vec<(std::ops::Range<usize>, SocketAddr)> = Vec::new();
        for (r, v) in all.iter().enumerate() {
            let a = &v[nsec..];
            let port = ((a[4] as u16) << 8) | a[5] as u16;
            if local.contains(&r) || port == 0 {
                continue;
            }
            let addr = SocketAddr::new(
                IpAddr::from([a[0] as u8, a[1] as u8, a[2] as u8, a[3] as u8]),
                port,
            );
            match remote.last_mut() {
                Some((ranks, last)) if *last == addr => ranks.end = r + 1,
                _ => remote.push((r..r + 1, addr)),
            }
        }
        *roster.remote.lock().expect("roster") = remote;
    }
    Ok(())
}

/// `host:port` as an IPv4 socket address (what `check` can publish).
pub fn resolve_v4(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.find(|a| a.is_ipv4())
}
