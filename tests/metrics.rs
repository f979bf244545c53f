//! What a run shows (issue 9): metrics.jsonl carries every field with sane values and continues
//! across a resume, and `colossus plot` turns it into a PNG (or names the bad input, exit 2).

mod common;

use std::process::Command;

use colossus::backend::CpuTrain;
use colossus::checkpoint;
use colossus::config::Resume;
use colossus::train::{self, TrainOptions};
use common::*;

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn metrics_have_every_field_continue_across_resume_and_plot() {
    let dir = temp_dir("metrics");
    let extra = [
        "train.steps=6",
        "train.warmup_steps=1",
        "train.eval_every=2",
        "train.eval_batches=2",
        "data.val_fraction=0.2",
    ];
    let cfg = tiny_config(&dir, &extra);
    let opts = |stop_after| TrainOptions {
        quiet: true,
        stop_after,
        ..Default::default()
    };
    train::train::<CpuTrain>(&cfg, &opts(Some(4)), &Default::default()).unwrap();
    let mut resumed = cfg.clone();
    resumed.train.resume = Resume::Auto;
    train::train::<CpuTrain>(&resumed, &opts(None), &Default::default()).unwrap();

    let run = checkpoint::run_dir(&cfg);
    let all = records(&run.join("metrics.jsonl"));
    let (steps, vals): (Vec<_>, Vec<_>) = all.iter().partition(|r| r.get("loss").is_some());
    assert_eq!(steps.len(), 6, "one record per step across the resume");
    assert_eq!(vals.len(), 3, "validation at steps 2, 4, 6");
    let mut last_tokens = 0;
    for (i, r) in steps.iter().enumerate() {
        assert_eq!(r["step"].as_u64().unwrap(), i as u64 + 1);
        let tokens = r["tokens"].as_u64().unwrap();
        assert!(tokens > last_tokens);
        last_tokens = tokens;
        for key in [
            "loss",
            "aux_loss",
            "lr",
            "grad_norm",
            "tokens_per_s",
            "step_time_s",
        ] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
        }
        let mfu = r["mfu"].as_f64().unwrap();
        assert!(mfu > 0.0 && mfu <= 1.0, "mfu {mfu}");
        if cfg!(target_os = "linux") {
            assert!(r["peak_mem_bytes"].as_u64().unwrap() > 1 << 20);
        }
        let load = r["expert_load"].as_array().unwrap();
        assert_eq!(load.len(), cfg.model.n_layers);
        for layer in load {
            let shares: Vec<f64> = layer
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(shares.len(), cfg.model.n_experts);
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{shares:?}");
        }
    }
    for (v, step) in vals.iter().zip([2, 4, 6]) {
        assert_eq!(v["step"].as_u64().unwrap(), step);
        assert!(v["val_loss"].as_f64().unwrap().is_finite());
    }

    let out = Command::new(env!("CARGO_BIN_EXE_colossus"))
        .args(["plot", &run.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(run.join("metrics.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn plot_names_bad_input_with_exit_2() {
    let dir = temp_dir("plot-bad");
    let plot = |path: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_colossus"))
            .args(["plot", &path.display().to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(plot(&dir.join("nope")).contains("not a run directory"));
    let err = plot(&dir);
    assert!(
        err.contains("metrics.jsonl") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(
        dir.join("metrics.jsonl"),
        // Finished by its newline: a bad record, not one still being written.
        "{\"step\":1,\"tokens\":4,\"loss\":1.0,\"lr\":0.1}\n{\"step\":2,\"tok\n",
    )
    .unwrap();
    let err = plot(&dir);
    assert!(err.contains("metrics.jsonl: line 2: not JSON"), "{err}");
    // The image is a PNG whatever --out says: another extension is refused before any work
    // (it once wrote PNG bytes into `metrics.svg`).
    let out = Command::new(env!("CARGO_BIN_EXE_colossus"))
        .args(["plot", &dir.display().to_string(), "--out"])
        .arg(dir.join("metrics.svg"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics.svg") && err.contains("PNG"), "{err}");
    assert!(!dir.join("metrics.svg").exists());
}
