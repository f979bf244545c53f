//! The training loop end to end on the CPU backend: it learns, it memorises, it is bit-for-bit
//! deterministic, and what it saves loads back.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use colossus::backend::{Cpu, CpuTrain};
use colossus::checkpoint;
use colossus::data::{Batch, BatchSource};
use colossus::model::Grok;
use colossus::train::grads::Grads;
use colossus::train::optim::{AdamW, AdamWSettings};
use colossus::train::{self, TrainOptions, params, trainer};
use common::*;

/// The same batch every time.
struct Fixed(Batch);
impl BatchSource for Fixed {
    fn next_batch(&mut self, _: usize, _: usize) -> Batch {
        self.0.clone()
    }
}

#[test]
fn tiny_model_memorises_one_batch() {
    let dir = temp_dir("overfit");
    let cfg = tiny_config(
        &dir,
        &[
            "train.micro_batch=2",
            "data.seq_len=16",
            "train.lr=1e-2",
            "train.weight_decay=0",
        ],
    );
    let device = Default::default();
    let mut model: Grok<CpuTrain> = cfg.model.init(cfg.seed, &device);
    let mut opt = AdamW::<Cpu>::new(AdamWSettings::from(&cfg.train), params::list(&model), &device);
    let seq: Vec<i64> = (0..34).map(|i| (i * 37 % 500) as i64).collect();
    let batch = Batch {
        batch: 2,
        seq: 16,
        inputs: [&seq[0..16], &seq[17..33]].concat(),
        targets: [&seq[1..17], &seq[18..34]].concat(),
    };
    let mut source = Fixed(batch);
    let mut loss = f64::INFINITY;
    for _ in 0..150 {
        let sg = trainer::accumulate(&cfg, &model, &mut source, &device);
        loss = sg.loss;
        let (g, _) = sg.grads.clip_global_norm(1.0);
        model = opt.step(model, g, 1e-2);
    }
    assert!(loss < 0.1, "loss after 150 steps on one batch: {loss}");
}

#[test]
fn same_seed_gives_bit_identical_runs() {
    let run = |name: &str| {
        let dir = temp_dir(name);
        let cfg = tiny_config(
            &dir,
            &["train.steps=6", "train.warmup_steps=2", "train.grad_accum=2"],
        );
        let s = train::train::<CpuTrain>(
            &cfg,
            &TrainOptions {
                quiet: true,
                overwrite: false,
                ..Default::default()
            },
            &Default::default(),
        )
        .unwrap();
        // Compare tensors, not file bytes: the metadata holds the (different) output directory.
        let file = colossus::checkpoint::weights::read_safetensors(
            &s.checkpoint.unwrap().join(checkpoint::WEIGHTS_FILE),
        )
        .unwrap();
        let mut tensors: Vec<(String, Vec<u32>)> = file
            .tensors
            .into_iter()
            .map(|(k, (_, v))| (k, v.iter().map(|x| x.to_bits()).collect()))
            .collect();
        tensors.sort();
        (s.losses, tensors)
    };
    let (la, wa) = run("det-a");
    let (lb, wb) = run("det-b");
    assert_eq!(la.len(), 6);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&la), bits(&lb), "losses differ: {la:?} vs {lb:?}");
    assert!(wa == wb, "saved weights differ between identical runs");
    // And a different seed really changes the run.
    let dir = temp_dir("det-c");
    let cfg = tiny_config(
        &dir,
        &[
            "train.steps=6",
            "train.warmup_steps=2",
            "train.grad_accum=2",
            "seed=99",
        ],
    );
    let s = train::train::<CpuTrain>(
        &cfg,
        &TrainOptions {
            quiet: true,
            overwrite: false,
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap();
    assert_ne!(bits(&s.losses), bits(&la));
}

/// The error of a run expected to stop before it trains.
fn train_err(cfg: &colossus::config::Config, overwrite: bool) -> String {
    let opts = TrainOptions {
        quiet: true,
        overwrite,
        ..Default::default()
    };
    train::train::<CpuTrain>(cfg, &opts, &Default::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn tiny_preset_learns_and_its_checkpoint_loads_back() {
    let dir = temp_dir("learn");
    let cfg = tiny_config(&dir, &["train.steps=40", "train.checkpoint_every=20"]);
    let s = train::train::<CpuTrain>(
        &cfg,
        &TrainOptions {
            quiet: true,
            overwrite: false,
            ..Default::default()
        },
        &Default::default(),
    )
    .unwrap();
    let first = s.losses[..5].iter().sum::<f64>() / 5.0;
    let last = s.losses[35..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 0.5, "loss did not fall: {first:.3} -> {last:.3}");
    assert!(
        (first - (512f64).ln()).abs() < 0.5,
        "initial loss {first} should be near ln(vocab)"
    );

    let run = checkpoint::run_dir(&cfg);
    let latest = checkpoint::latest(&run).unwrap();
    assert_eq!(latest, s.checkpoint.clone().unwrap());
    assert!(run.join("step-000020").join(checkpoint::WEIGHTS_FILE).is_file());
    assert!(latest.join(checkpoint::TOKENIZER_FILE).is_file());
    assert_eq!(checkpoint::read_config(&latest).unwrap(), cfg);
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );

    // Loading the checkpoint into a differently-seeded model reproduces the saved weights exactly.
    let device = Default::default();
    let fresh: Grok<Cpu> = cfg.model.init(cfg.seed + 1, &device);
    let loaded = checkpoint::load_weights(fresh, &latest).unwrap();
    let resaved = colossus::checkpoint::weights::snapshot(&loaded);
    let file =
        colossus::checkpoint::weights::read_safetensors(&latest.join(checkpoint::WEIGHTS_FILE)).unwrap();
    for (p, v) in params::list(&loaded).iter().zip(&resaved) {
        assert_eq!(&file.tensors[&p.path].1, v, "{}", p.path);
    }
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4], [1, 4]), &device);
    assert_eq!(loaded.forward(ids, None).logits.dims(), [1, 4, 512]);

    // A second run into the same directory is refused rather than overwriting the checkpoints.
    let again = train::train::<CpuTrain>(
        &cfg,
        &TrainOptions {
            quiet: true,
            overwrite: false,
            ..Default::default()
        },
        &device,
    );
    assert!(again.unwrap_err().to_string().contains("--overwrite"));
    assert!(latest.join(checkpoint::WEIGHTS_FILE).is_file());

    // With --overwrite, a run that stops on a bad input (here a corpus file that is not there,
    // then a vocabulary too small for a BPE) keeps the earlier run: the directory is emptied
    // only once the inputs have passed (found 2026-12-06: it was emptied first).
    let saved: Vec<_> = std::fs::read_dir(cfg.train.out_dir.clone() + "/" + &cfg.run_name)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for bad in ["data.corpus=[/nonexistent/corpus.txt]", "model.vocab_size=100"] {
        let cfg = tiny_config(&dir, &["train.steps=40", "train.checkpoint_every=20", bad]);
        let err = train_err(&cfg, true);
        assert!(
            err.contains("/nonexistent/corpus.txt") || err.contains("model.vocab_size"),
            "{err}"
        );
        assert!(latest.join(checkpoint::WEIGHTS_FILE).is_file(), "{bad}: {err}");
        let now: Vec<_> = std::fs::read_dir(cfg.train.out_dir.clone() + "/" + &cfg.run_name)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(now, saved, "{bad}");
    }

    // A resumed checkpoint of another shape is refused naming the config's file and every
    // changed key, the width first among them: it named only the first alphabetically,
    // `attn_output_multiplier`, which the width derives (2026-12-07).
    let other = tiny_config(
        &dir,
        &[
            "model.d_model=32",
            "model.head_dim=8",
            &format!("train.resume={}", latest.display()),
        ],
    );
    let err = train_err(&other, false);
    assert!(
        err.contains("configs/tiny.yaml: key `model`")
            && err.contains("d_model 64 (now 32)")
            && err.contains("head_dim 16 (now 8)")
            && err.contains("cannot change shape"),
        "{err}"
    );
}

#[test]
fn gradient_accumulation_averages_micro_batches() {
    // Two micro-batches of 2 accumulate to the gradient of one batch of 4 (same rows).
    let dir = temp_dir("accum");
    let device = Default::default();
    let cfg1 = tiny_config(
        &dir,
        &["train.micro_batch=4", "train.grad_accum=1", "data.seq_len=8"],
    );
    let cfg2 = tiny_config(
        &dir,
        &["train.micro_batch=2", "train.grad_accum=2", "data.seq_len=8"],
    );
    let model: Grok<CpuTrain> = cfg1.model.init(5, &device);
    let rows: Vec<i64> = (0..36).map(|i| (i * 13 % 500) as i64).collect();
    let mk = |r: std::ops::Range<usize>| Batch {
        batch: r.len(),
        seq: 8,
        inputs: r.clone().flat_map(|i| rows[i * 9..i * 9 + 8].to_vec()).collect(),
        targets: r.flat_map(|i| rows[i * 9 + 1..i * 9 + 9].to_vec()).collect(),
    };
    let whole = trainer::accumulate(&cfg1, &model, &mut Fixed(mk(0..4)), &device);
    struct Seq(Vec<Batch>);
    impl BatchSource for Seq {
        fn next_batch(&mut self, _: usize, _: usize) -> Batch {
            self.0.remove(0)
        }
    }
    let split = trainer::accumulate(&cfg2, &model, &mut Seq(vec![mk(0..2), mk(2..4)]), &device);
    assert!((whole.loss - split.loss).abs() < 1e-5);
    let flat = |g: Grads<Cpu>| -> Vec<f32> {
        g.tensors
            .into_iter()
            .flat_map(|t| t.into_data().convert::<f32>().into_vec::<f32>().unwrap())
            .collect()
    };
    let (a, b) = (flat(whole.grads), flat(split.grads));
    let scale = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-5 * scale.max(1.0), "max grad diff {err} (scale {scale})");
}

/// Issue 8: `train.cpu_workers` splits each micro-batch into row shards computed at once; the
/// combined loss, router load and gradients must be the one-pass values up to summation order,
/// for even shards (4 rows / 2), uneven ones (4 rows / 3: 1, 1 and 2 rows, weighted by rows),
/// more workers than rows (clamped to 4), with gradient accumulation, and on the plain paths.
#[test]
fn issue_8_cpu_workers_match_one_pass() {
    let dir = temp_dir("workers");
    let device = Default::default();
    let seq: Vec<i64> = (0..4 * 17).map(|i| (i * 37 % 500) as i64).collect();
    let rows: Vec<&[i64]> = seq.chunks(17).collect();
    let batch = Batch {
        batch: 4,
        seq: 16,
        inputs: rows.iter().flat_map(|r| r[..16].to_vec()).collect(),
        targets: rows.iter().flat_map(|r| r[1..].to_vec()).collect(),
    };
    let step = |workers: usize, accum: usize| {
        let cfg = tiny_config(
            &dir,
            &[
                "train.micro_batch=4",
                "data.seq_len=16",
                &format!("train.grad_accum={accum}"),
                &format!("train.cpu_workers={workers}"),
            ],
        );
        let model: Grok<CpuTrain> = cfg.model.init(cfg.seed, &device);
        trainer::accumulate(&cfg, &model, &mut Fixed(batch.clone()), &device)
    };
    for (plain, accum) in [(false, 1), (false, 2), (true, 1)] {
        let run = |w| {
            if plain {
                colossus::model::fused::plain_scope(|| step(w, accum))
            } else {
                step(w, accum)
            }
        };
        let one = run(1);
        for workers in [2, 3, 8] {
            let many = run(workers);
            let what = format!("{workers} workers, grad_accum {accum}, plain {plain}");
            assert!(
                (one.loss - many.loss).abs() < 1e-6 * one.loss,
                "{what}: loss {} vs {}",
                one.loss,
                many.loss
            );
            for (a, b) in one
                .expert_load
                .iter()
                .flatten()
                .zip(many.expert_load.iter().flatten())
            {
                assert!((a - b).abs() < 1e-6, "{what}: expert load {a} vs {b}");
            }
            assert_eq!(one.grads.tensors.len(), many.grads.tensors.len());
            for (i, (a, b)) in one.grads.tensors.iter().zip(&many.grads.tensors).enumerate() {
                let (a, b) = (floats(a.clone()), floats(b.clone()));
                let err = rel_l2(&a, &b);
                assert!(
                    err < 1e-5,
                    "{what}: gradient {i} differs by {err:e} (relative L2)"
                );
            }
        }
    }
}

/// A stop asked for before the first step trains nothing and saves nothing: it once trained and
/// saved one step after the user asked to stop. With the data still to prepare, preparation
/// stops (exit status 130) and leaves no partial cache entry; with it prepared, the run stops
/// before its first step.
#[test]
fn a_stop_before_the_first_step_trains_nothing() {
    let dir = temp_dir("stop-first");
    let cfg = tiny_config(&dir, &["train.steps=3", "train.warmup_steps=1"]);
    let opts = TrainOptions {
        quiet: true,
        stop: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true))),
        ..Default::default()
    };
    let err = train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap_err();
    assert_eq!(err.exit_code(), 130, "{err}");
    let cache = colossus::data::cache_root(&cfg);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    colossus::data::training_data(&cfg, true).unwrap();
    let s = train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap();
    assert!(s.interrupted && s.losses.is_empty() && s.checkpoint.is_none());
    assert!(checkpoint::latest(&dir.join("tiny")).is_none());
}
