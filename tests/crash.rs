//! Crash and signal safety of the `colossus` process (issue 4): SIGKILL at random moments and in
//! the middle of saves loses nothing past the last complete checkpoint and the resumed run ends
//! bit-identical to one never killed; SIGINT finishes the step, saves and exits 0; a second
//! signal exits at once and leaves the last complete checkpoint intact; a write that fails
//! mid-save (a full disk) ends the run with the file named and keeps the last checkpoint; a log
//! that can no longer be written ends nothing, and a hangup saves like SIGINT.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use colossus::checkpoint::{self, checksums, state};

/// Train the tiny preset on the sonnets into `out`, with extra `--set`s and environment.
fn spawn(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_colossus"));
    cmd.args(train_args(out, extra));
    for (k, v) in env {
        cmd.env(k, v);
    }
    start(cmd)
}

/// A run that trains to its end undisturbed, in a new directory: what an interrupted run must
/// end equal to.
fn trained(name: &str, extra: &[&str], env: &[(&str, &str)]) -> common::TempDir {
    let dir = common::temp_dir(name);
    let out = spawn(&dir, extra, env).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn start(mut cmd: Command) -> Child {
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `spawn`'s command line, `--resume` included.
fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        "configs/tiny.yaml".to_string(),
        "--set".to_string(),
        format!("train.out_dir={}", out.display()),
        "--set".to_string(),
        "data.corpus=[data/shakespeare/sonnets.txt]".to_string(),
        "--set".to_string(),
        "train.warmup_steps=1".to_string(),
    ];
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    args.push("--resume".into());
    args
}

/// The `--set`s of a run too long to end by itself, logging every step, saving every `every`.
fn long_run_sets(every: usize) -> Vec<String> {
    vec![
        "train.steps=100000".into(),
        "train.log_every=1".into(),
        format!("train.checkpoint_every={every}"),
    ]
}

/// Start a `long_run_sets(every)` run whose saves pause `pause_ms` before publishing, and wait
/// for its 5th step; its stderr lines and the log read so far.
fn long_run(dir: &Path, every: usize, pause_ms: u64) -> (Child, mpsc::Receiver<String>, Vec<String>) {
    let sets = long_run_sets(every);
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let pause = pause_ms.to_string();
    let mut child = spawn(dir, &sets, &[("COLOSSUS_TEST_SAVE_PAUSE_MS", &pause)]);
    let rx = common::stderr_lines(&mut child);
    let mut log = Vec::new();
    wait_for(&rx, "step 5/", &mut log);
    (child, rx, log)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, log: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(needle);
            log.push(line);
            if hit {
                return;
            }
        }
    }
    panic!("no line containing {needle:?} in {log:#?}");
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn staged_dirs(run: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every complete checkpoint verifies and its weights load into the model.
fn all_checkpoints_load(run: &Path) -> usize {
    let all = checkpoint::list(run);
    for dir in &all {
        checksums::verify(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let cfg = checkpoint::read_config(dir).unwrap();
        let model = cfg.model.init::<colossus::backend::Cpu>(0, &Default::default());
        checkpoint::load_weights(model, dir).unwrap();
        state::read_state(dir).unwrap();
    }
    if let Some(latest) = checkpoint::latest(run) {
        assert!(all.contains(&latest));
    }
    all.len()
}

/// A tiny deterministic generator for the kill times (the test must be reproducible).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn sigkill_at_random_moments_and_mid_save_loses_nothing() {
    let extra = [
        "train.steps=24",
        "train.warmup_steps=2",
        "train.checkpoint_every=3",
        "train.log_every=1",
    ];
    // Saves pause 300 ms after writing the weights and before publishing, so a large share of
    // the run has a half-written checkpoint on disk for the kills to land in.
    let env = [("COLOSSUS_TEST_SAVE_PAUSE_MS", "300")];

    let reference = trained("kill-ref", &extra, &env);
    let reference_final = reference.join("tiny/step-000024");

    let dir = common::temp_dir("kill");
    let run = dir.join("tiny");
    let mut rng = Lcg(20261122);
    let (mut kills, mut mid_save_kills) = (0, 0);
    for attempt in 0..60 {
        let before = checkpoint::list(&run).len();
        let mut child = spawn(&dir, &extra, &env);
        let start = Instant::now();
        let finished = if attempt % 2 == 0 {
            // A random moment: startup, a step, or a save.
            let delay = Duration::from_millis(100 + rng.below(1500));
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if start.elapsed() >= delay {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            // Inside a save, after at least one more checkpoint is complete (so runs progress).
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if checkpoint::list(&run).len() > before && !staged_dirs(&run).is_empty() {
                    break None;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "no save observed");
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        match finished {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                if !staged_dirs(&run).is_empty() {
                    mid_save_kills += 1;
                }
                all_checkpoints_load(&run);
            }
        }
    }
    assert!(kills >= 3, "only {kills} kills landed");
    assert!(mid_save_kills >= 1, "no kill landed inside a save");
    assert_eq!(all_checkpoints_load(&run), 8);
    let last = run.join("step-000024");
    for file in [checkpoint::WEIGHTS_FILE, state::OPTIMIZER_FILE] {
        assert_eq!(
            common::tensor_bits(&last.join(file)),
            common::tensor_bits(&reference_final.join(file)),
            "{file} after {kills} kills ({mid_save_kills} mid-save)"
        );
    }
    // metrics.jsonl holds each step once, in order, whatever the kills cut short.
    assert_eq!(metric_steps(&run), (1..=24).collect::<Vec<_>>());
}

/// The steps metrics.jsonl logs, in file order.
fn metric_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn sigint_finishes_the_step_saves_and_exits_zero() {
    let dir = common::temp_dir("sigint");
    let extra = ["train.steps=100000", "train.log_every=1"];
    let mut child = spawn(&dir, &extra, &[]);
    let rx = common::stderr_lines(&mut child);
    let mut log = Vec::new();
    wait_for(&rx, "step 3/", &mut log);
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let stdout = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    log.extend(rx.try_iter());
    assert!(status.success(), "{status:?}: {log:#?}");
    assert!(stdout.contains("colossus train CONFIG --resume"), "{stdout}");

    let run = dir.join("tiny");
    let latest = checkpoint::latest(&run).expect("a checkpoint on SIGINT");
    let step = state::read_state(&latest).unwrap().step;
    assert!(step >= 3);
    let logged = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(logged, step, "every finished step is in the checkpoint");
    assert_eq!(all_checkpoints_load(&run), 1);

    // It continues from there.
    let steps = format!("train.steps={}", step + 2);
    let out = spawn(&dir, &[&steps], &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("done: 2 steps this run"));
}

#[test]
fn second_signal_exits_at_once_and_keeps_the_last_checkpoint() {
    let dir = common::temp_dir("sigint-twice");
    let run = dir.join("tiny");
    let out = spawn(&dir, &["train.steps=2"], &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = run.join("step-000002");
    let before = common::tensor_bits(&kept.join(checkpoint::WEIGHTS_FILE));

    // Continue with saves that pause long enough to still be in flight at the second signal.
    let (mut child, rx, mut log) = long_run(&dir, 4, 20000);
    signal(&child, "-INT");
    wait_for(&rx, "signal received", &mut log);
    let t = Instant::now();
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{log:#?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "second signal took {:?}",
        t.elapsed()
    );

    // The interrupted save is a hidden staged directory; the last complete checkpoint is the
    // one from before, byte for byte, and `latest` still names it.
    assert!(!staged_dirs(&run).is_empty());
    assert_eq!(all_checkpoints_load(&run), 1);
    assert_eq!(checkpoint::latest(&run), Some(kept.clone()));
    assert_eq!(common::tensor_bits(&kept.join(checkpoint::WEIGHTS_FILE)), before);
    let out = spawn(&dir, &["train.steps=3"], &[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("left half-written by an earlier process"),
        "{stderr}"
    );
    assert!(staged_dirs(&run).is_empty());
    assert_eq!(all_checkpoints_load(&run), 2);
}

/// A write that fails in the middle of a save (here the file-size limit, which fails `write` with
/// EFBIG once SIGXFSZ is ignored; a full disk fails it the same way with ENOSPC) ends the run
/// with the file named and a non-zero exit, not a panic; the half-written save is removed, the
/// last complete checkpoint is untouched, and the run resumes from it to the same end as a run
/// that never failed.
#[test]
fn a_write_failing_mid_save_keeps_the_last_checkpoint() {
    let extra = ["train.steps=6", "train.checkpoint_every=2", "train.log_every=1"];
    let reference = trained("efbig-ref", &extra, &[]);

    let dir = common::temp_dir("efbig");
    let run = dir.join("tiny");
    let first = spawn(&dir, &["train.steps=2", "train.log_every=1"], &[]);
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = run.join("step-000002");
    let before = common::tensor_bits(&kept.join(checkpoint::WEIGHTS_FILE));
    let weights = std::fs::metadata(kept.join(checkpoint::WEIGHTS_FILE))
        .unwrap()
        .len();
    let moments = std::fs::metadata(kept.join(state::OPTIMIZER_FILE)).unwrap().len();
    // Room for the weights (and the token shards, read not written), not for the AdamW moments.
    let limit_kib = (weights + moments) / 2 / 1024;
    assert!(weights < limit_kib * 1024 && limit_kib * 1024 < moments);

    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -f {limit_kib}; trap '' XFSZ; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_colossus"))
        .args(train_args(&dir, &extra));
    let out = start(cmd).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(state::OPTIMIZER_FILE) && stderr.contains("File too large"),
        "{stderr}"
    );
    assert!(staged_dirs(&run).is_empty(), "{:?}", staged_dirs(&run));
    assert_eq!(all_checkpoints_load(&run), 1);
    assert_eq!(checkpoint::latest(&run), Some(kept.clone()));
    assert_eq!(common::tensor_bits(&kept.join(checkpoint::WEIGHTS_FILE)), before);

    let out = spawn(&dir, &extra, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(all_checkpoints_load(&run), 3);
    for file in [checkpoint::WEIGHTS_FILE, state::OPTIMIZER_FILE] {
        assert_eq!(
            common::tensor_bits(&run.join("step-000006").join(file)),
            common::tensor_bits(&reference.join("tiny/step-000006").join(file)),
            "{file}"
        );
    }
    // The failed run's steps past the kept checkpoint were logged, then trained again: once each.
    assert_eq!(metric_steps(&run), (1..=6).collect::<Vec<_>>());
}

/// A second process on a run that another is training (a scheduler restarting a job whose first
/// copy still runs) is refused before it touches the run directory, with `--resume` and with
/// `--overwrite` alike. Before the run lock, the second one's start removed the first one's
/// in-flight save as "half-written by an earlier process" and trimmed metrics.jsonl under it (a
/// 60-step run ended with 18 records), and `--overwrite` deleted the directory it was writing.
#[test]
fn a_second_process_on_a_running_run_is_refused_and_touches_nothing() {
    let dir = common::temp_dir("second-process");
    let run = dir.join("tiny");
    // Saves stay in flight for a while, so the second process starts during one.
    let (mut first, rx, mut log) = long_run(&dir, 2, 1500);
    let extra = long_run_sets(2);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let holder = format!("pid {}", first.id());
    let refusal = ["is training into this run directory", holder.as_str()];

    // `--stop-after 1`: one that is let in ends by itself and fails the test, not hangs it.
    for flag in ["--resume", "--overwrite"] {
        let mut args = train_args(&dir, &extra);
        assert_eq!(args.pop().as_deref(), Some("--resume"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colossus"));
        cmd.args(args).args([flag, "--stop-after", "1"]);
        let out = start(cmd).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(refusal.iter().all(|s| stderr.contains(s)), "{flag}: {stderr}");
    }

    signal(&first, "-INT");
    let status = wait_exit(&mut first, Duration::from_secs(60));
    log.extend(rx.try_iter());
    assert!(status.success(), "{status:?}: {log:#?}");
    let latest = checkpoint::latest(&run).expect("the first process's checkpoint");
    let step = state::read_state(&latest).unwrap().step as u64;
    assert!(all_checkpoints_load(&run) >= 3);
    assert_eq!(metric_steps(&run), (1..=step).collect::<Vec<_>>());
    assert!(!log.iter().any(|l| l.contains("half-written")), "{log:#?}");

    // With the first process gone, the run continues.
    let steps = format!("train.steps={}", step + 1);
    let out = spawn(&dir, &[&steps], &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A log nobody reads any more does not end the run (`colossus train ... 2>&1 | head`): every
/// failed write to stderr once panicked, so the run ended with exit 101 at its first log line,
/// before any step. The run now trains to its end and saves the same weights as one whose log was
/// read.
#[test]
fn a_closed_log_does_not_end_the_run() {
    let extra = ["train.steps=6", "train.checkpoint_every=2", "train.log_every=1"];
    let reference = trained("log-read", &extra, &[]);

    let dir = common::temp_dir("log-closed");
    let mut child = spawn(&dir, &extra, &[]);
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(stdout.contains("done: 6 steps this run"), "{stdout}");
    let run = dir.join("tiny");
    assert_eq!(metric_steps(&run), (1..=6).collect::<Vec<_>>());
    assert_eq!(checkpoint::latest(&run), Some(run.join("step-000006")));
    let weights = |d: &Path| common::tensor_bits(&d.join("tiny/step-000006").join(checkpoint::WEIGHTS_FILE));
    assert!(
        weights(&dir) == weights(&reference),
        "the weights differ from the run whose log was read"
    );
}

/// A hangup (the terminal closed) stops the run with a checkpoint, as SIGINT does, though every
/// line it writes after that fails: the stop's own lines once panicked before the save. Here the
/// log's reader goes away before the signal (EPIPE; a hung-up terminal fails writes with EIO).
#[test]
fn a_hangup_with_the_log_gone_still_saves() {
    use std::io::BufRead;
    let dir = common::temp_dir("sighup");
    let mut child = spawn(&dir, &["train.steps=100000", "train.log_every=1"], &[]);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    while !log.last().is_some_and(|l: &String| l.contains("step 3/")) {
        let line = lines.next().unwrap_or_else(|| panic!("stderr ended: {log:#?}"));
        log.push(line.unwrap());
    }
    drop(lines);
    signal(&child, "-HUP");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let stdout = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "{status:?}: {stdout}");
    assert!(stdout.contains("interrupted by a signal"), "{stdout}");

    let run = dir.join("tiny");
    let latest = checkpoint::latest(&run).expect("a checkpoint on SIGHUP");
    let step = state::read_state(&latest).unwrap().step;
    assert!(step >= 3, "{step}");
    assert_eq!(metric_steps(&run), (1..=step as u64).collect::<Vec<_>>());
    assert_eq!(all_checkpoints_load(&run), 1);
}

/// A run's length costs no memory up front: the loop reserved 8 bytes a step for its losses
/// before the first step, so `train.steps: 4294967297` asked for 34 GB at once and aborted
/// ("memory allocation ... failed") under an address-space limit, as cluster jobs often run.
#[test]
fn a_long_run_starts_under_a_memory_limit() {
    let dir = common::temp_dir("long-run");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -v 16000000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_colossus"))
        .args(train_args(&dir, &["train.steps=4294967297"]))
        .args(["--stop-after", "1"]);
    let out = start(cmd).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("4294967297 steps"), "{stderr}");
    let run = dir.join("tiny");
    assert_eq!(checkpoint::latest(&run), Some(run.join("step-000001")));
    assert_eq!(all_checkpoints_load(&run), 1);
}
