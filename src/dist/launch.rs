//! Starting the ranks of this process: one thread per local rank, each registered with
//! burn-collective (`register`: the local server joins the threads; with several processes it
//! also joins the global orchestrator, which process 0 hosts on `master_port`), then each runs the
//! training loop with its `Dist` handle. One rank in one process skips all of it.

use std::str::FromStr;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_collective::{CollectiveConfig, PeerId};
use burn_communication::Address;

use super::comm::Dist;
use super::watchdog::Roster;
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::train::{TrainOptions, TrainSummary, trainer::train_rank};

/// Train as `cfg.distributed` says; returns the summary of this process's first rank.
pub fn run<B: AutodiffBackend>(cfg: &Config, opts: &TrainOptions, device: B::Device) -> Result<TrainSummary> {
    let d = &cfg.distributed;
    if d.world_size == 1 {
        return train_rank::<B>(cfg, opts, &device, &Dist::single());
    }
    let (processes, process) = (d.processes(), d.process());
    // Warnings and errors only (burn's WebSocket layer would otherwise print every connection at
    // INFO); RUST_LOG still selects more. Fails harmlessly when a subscriber is already set.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut collective = CollectiveConfig::default().with_num_devices(d.local_ranks);
    let mut data_addr = None;
    if processes > 1 {
        let host = node_host(cfg)?;
        // Process p serves tensors to the others on master_port + 1 + p (distinct on one host).
        let data_port = d.master_port + 1 + process as u16;
        port_free(cfg, data_port, &format!("process {process}'s tensor-data server"))?;
        if process == 0 {
            start_orchestrator(cfg, d.master_port)?;
        }
        let addr = |h: &str, p: u16| Address::from_str(&format!("ws://{h}:{p}")).expect("infallible");
        collective = collective
            .with_num_nodes(processes as u32)
            .with_global_address(addr(&d.master_addr, d.master_port))
            .with_node_address(addr(&host, data_port))
            .with_data_service_port(data_port);
        data_addr = super::agree::resolve_v4(&host, data_port);
    }
    let roster = Roster::new(d.world_size, d.rank, d.local_ranks);
    let results: Vec<Result<TrainSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..d.local_ranks)
            .map(|i| {
                let (roster, collective) = (roster.clone(), collective.clone());
                let dev = local_device::<B>(cfg.backend, &device, i);
                let mut opts = opts.clone();
                opts.quiet |= i > 0;
                s.spawn(move || {
                    let rank = d.rank + i;
                    let mut dist = Dist::member(rank, d.world_size, d.timeout_s, d.bucket_mb, roster);
                    dist.data_addr = data_addr;
                    let (id, reg_dev) = (PeerId::from(rank), dev.clone());
                    dist.call("joining the collective", move || {
                        burn_collective::register::<B::InnerBackend>(id, reg_dev, collective)
                    })
                    .map_err(|e| match e {
                        // The orchestrator compares the process count each node registers with.
                        Error::Train(m) if m.contains("RegisterParamsMismatch") => Error::ConfigValue {
                            file: "distributed job".into(),
                            key: "distributed.world_size".into(),
                            msg: format!(
                                "{} (world size {}) differs from the processes already registered with \
                                 the orchestrator at {}:{}",
                                processes, d.world_size, d.master_addr, d.master_port
                            ),
                        },
                        e => e,
                    })?;
                    let out = train_rank::<B>(cfg, &opts, &dev, &dist);
                    if out.is_ok() {
                        dist.finish::<B::InnerBackend>();
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Train("a rank's training thread panicked".into())))
            })
            .collect()
    });
    let mut first = None;
    for r in results {
        match r {
            Err(e) => return Err(e),
            Ok(s) if first.is_none() => first = Some(s),
            Ok(_) => {}
        }
    }
    Ok(first.expect("at least one local rank"))
}

/// The device of local rank `i`: the same CPU for every rank; on a GPU backend the `i`-th after
/// `device` (one GPU per rank).
fn local_device<B: Backend>(kind: BackendKind, device: &B::Device, i: usize) -> B::Device {
    use burn::tensor::backend::Device as _;
    if i == 0 || kind == BackendKind::Cpu {
        return device.clone();
    }
    let mut id = device.to_id();
    id.index_id += i as u16;
    B::Device::from_id(id)
}

/// This process's address as the others reach it.
fn node_host(cfg: &Config) -> Result<String> {
    let d = &cfg.distributed;
    if let Some(h) = &d.node_addr {
        return Ok(h.clone());
    }
    if matches!(d.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return Ok(d.master_addr.clone());
    }
    Err(cfg.error(
        "distributed.node_addr",
        format!(
            "needed when distributed.master_addr ({}) is not a loopback address: this machine's \
             address as the other machines reach it (or set NODE_ADDR, e.g. NODE_ADDR=$(hostname))",
            d.master_addr
        ),
    ))
}

/// Host burn-collective's global orchestrator on `port` (all interfaces), on its own thread and
/// tokio runtime, for the life of this process.
fn start_orchestrator(cfg: &Config, port: u16) -> Result<()> {
    port_free(cfg, port, "the collective orchestrator")?;
    std::thread::Builder::new()
        .name("collective-orchestrator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime for the orchestrator");
            rt.block_on(burn_collective::start_global_orchestrator(port));
        })
        .map_err(|e| Error::Train(format!("starting the collective orchestrator: {e}")))?;
    Ok(())
}

/// burn only logs a failed bind (the orchestrator) or dies in its first all-reduce (a tensor-data
/// server whose port another program holds), so check first: a busy port is a clear error.
fn port_free(cfg: &Config, port: u16, what: &str) -> Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        cfg.error(
            "distributed.master_port",
            format!(
                "cannot listen on port {port} for {what}: {e} (a job uses master_port for the \
                 orchestrator and master_port + 1 + p for process p's tensor data)"
            ),
        )
    })?;
    Ok(())
}
