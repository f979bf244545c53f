//! Export to and import from the Hugging Face Grok1ForCausalLM layout, generation with and
//! without the KV cache, and the tokenizer as Python `tokenizers` reads it.

mod common;

use std::collections::HashMap;
use std::path::Path;

use colossus::backend::{Cpu, CpuTrain};
use colossus::checkpoint::export::{ExportOptions, export};
use colossus::checkpoint::tensors::{MappedFile, StoreDtype};
use colossus::checkpoint::{self, import, weights};
use colossus::data::tokenizer;
use colossus::generate::{SampleOptions, generate};
use colossus::model::Grok;
use colossus::train::{self, TrainOptions, params};
use common::*;

fn all_tensors(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<u8>)> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (n, v) in st.iter() {
                out.insert(n.to_string(), (v.shape().to_vec(), v.data().to_vec()));
            }
        }
    }
    out
}

/// f32 tensors in one file: the export most tests compare byte for byte.
fn f32_one_file() -> ExportOptions {
    ExportOptions {
        dtype: StoreDtype::F32,
        max_shard_bytes: u64::MAX,
        stop: None,
    }
}

fn trained_tiny(dir: &Path) -> std::path::PathBuf {
    let cfg = tiny_config(dir, &["train.steps=3", "train.warmup_steps=1"]);
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
    s.checkpoint.unwrap()
}

#[test]
fn export_import_export_is_byte_identical() {
    let dir = temp_dir("roundtrip");
    let ckpt = trained_tiny(&dir);
    // A 0.1 MB shard limit splits the tiny model into several files plus an index.
    let opts = ExportOptions {
        dtype: StoreDtype::F32,
        max_shard_bytes: 100_000,
        stop: None,
    };
    let a = export(&ckpt, &dir.join("hf-a"), &opts).unwrap();
    assert!(a.shards > 1, "expected sharding, got {} shard(s)", a.shards);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), a.tensors);
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(a.dir.join(f).is_file(), "{f}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "Grok1ForCausalLM");
    assert_eq!(config["intermediate_size"], 88);
    assert_eq!(config["eos_token_id"], 2);

    let b = import::import(&a.dir, &dir.join("ckpt-b")).unwrap();
    let c = export(&b, &dir.join("hf-c"), &f32_one_file()).unwrap();
    assert_eq!(c.shards, 1);
    let (ta, tc) = (all_tensors(&a.dir), all_tensors(&c.dir));
    assert_eq!(ta.len(), tc.len());
    for (name, t) in &ta {
        assert!(
            tc[name] == *t,
            "tensor {name} differs after export → import → export"
        );
    }
    // The imported checkpoint holds exactly the trained weights.
    let orig = weights::read_safetensors(&ckpt.join(checkpoint::WEIGHTS_FILE)).unwrap();
    let back = weights::read_safetensors(&b.join(checkpoint::WEIGHTS_FILE)).unwrap();
    for (name, (_, v)) in &orig.tensors {
        assert_eq!(&back.tensors[name].1, v, "{name}");
    }
    assert_eq!(
        HF_NAMES.iter().filter(|n| ta.contains_key(**n)).count(),
        HF_NAMES.len()
    );
}

const HF_NAMES: [&str; 6] = [
    "model.embed_tokens.weight",
    "model.norm.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.0.block_sparse_moe.gate.weight",
    "model.layers.0.block_sparse_moe.experts.3.w2.weight",
    "model.layers.1.post_moe_norm.weight",
];

/// Exporting a checkpoint of the reference model writes exactly the tensors that the PyTorch
/// reference (tests/fixtures/grok_tiny) consumed, so an engine loading our export computes what
/// `forward_matches_pytorch_reference` checked.
#[test]
fn export_matches_the_layout_the_pytorch_reference_read() {
    let dir = temp_dir("ref-export");
    let model_cfg = reference_model();
    let device = Default::default();
    let model: Grok<Cpu> = model_cfg.init(REFERENCE_SEED, &device);
    let cfg = import::config_for(&model_cfg, &dir.join("ckpt"));
    let tok = tokenizer::train_bpe(
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/sonnets.txt")],
        300,
    )
    .unwrap();
    let params = params::list(&model);
    let ckpt = checkpoint::write_dir(
        &dir.join("ckpt"),
        &cfg,
        &params,
        &weights::snapshot(&model),
        &tok,
        0,
        None,
    )
    .unwrap();
    let out = export(&ckpt, &dir.join("hf"), &f32_one_file()).unwrap();
    let ours = all_tensors(&out.dir);
    let fixture = all_tensors(&fixture_dir());
    assert_eq!(ours.len(), fixture.len());
    for (name, t) in &fixture {
        assert!(
            ours[name] == *t,
            "{name} differs from the fixture the PyTorch reference read"
        );
    }
}

/// Writes tests/fixtures/tokenizer/tokenizer.json; then run tests/fixtures/tokenizer/make_fixture.py.
#[test]
#[ignore = "regenerates the tokenizer fixture; needs the Python step afterwards"]
fn write_tokenizer_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tok = tokenizer::train_bpe(&[root.join("data/shakespeare/sonnets.txt")], 512).unwrap();
    tokenizer::save(&tok, &root.join("tests/fixtures/tokenizer/tokenizer.json")).unwrap();
}

#[test]
fn bf16_export_rounds_and_imports() {
    let dir = temp_dir("bf16");
    let ckpt = trained_tiny(&dir);
    let out = export(
        &ckpt,
        &dir.join("hf"),
        &ExportOptions {
            dtype: StoreDtype::Bf16,
            max_shard_bytes: u64::MAX,
            stop: None,
        },
    )
    .unwrap();
    let f = MappedFile::open(&out.dir.join("model.safetensors")).unwrap();
    let (_, norm) = f.read_f32("model.norm.weight").unwrap();
    let orig = weights::read_safetensors(&ckpt.join(checkpoint::WEIGHTS_FILE)).unwrap();
    let want: Vec<f32> = orig.tensors["norm.weight"]
        .1
        .iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect();
    assert_eq!(norm, want);
    let imported = import::import(&out.dir, &dir.join("ckpt")).unwrap();
    assert!(imported.join(checkpoint::WEIGHTS_FILE).is_file());
}

/// (name, shape, little-endian f32 bytes)
type RawTensor = (String, Vec<usize>, Vec<u8>);

#[test]
fn import_names_missing_and_misshapen_tensors() {
    let dir = temp_dir("bad-import");
    let ckpt = trained_tiny(&dir);
    let good = export(&ckpt, &dir.join("hf"), &f32_one_file()).unwrap();
    let rewrite = |name: &str, edit: &dyn Fn(&mut Vec<RawTensor>)| {
        let target = dir.join(name);
        std::fs::create_dir_all(&target).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(good.dir.join(f), target.join(f)).unwrap();
        }
        let mut tensors: Vec<RawTensor> = all_tensors(&good.dir)
            .into_iter()
            .map(|(n, (s, b))| (n, s, b))
            .collect();
        edit(&mut tensors);
        let bytes =
            colossus::checkpoint::tensors::serialize(&tensors, safetensors::Dtype::F32, HashMap::new())
                .unwrap();
        std::fs::write(target.join("model.safetensors"), bytes).unwrap();
        target
    };
    let missing = rewrite("missing", &|t| {
        t.retain(|(n, _, _)| n != "model.layers.1.self_attn.k_proj.weight")
    });
    let err = import::import(&missing, &dir.join("o1")).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.1.self_attn.k_proj.weight") && err.contains("missing"),
        "{err}"
    );
    let extra = rewrite("extra", &|t| {
        t.push(("lm_head.weight".into(), vec![1], vec![0; 4]))
    });
    let err = import::import(&extra, &dir.join("o2")).unwrap_err().to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
    let shape = rewrite("shape", &|t| {
        let e = t.iter_mut().find(|(n, _, _)| n == "model.norm.weight").unwrap();
        e.1 = vec![8, 8];
    });
    let err = import::import(&shape, &dir.join("o3")).unwrap_err().to_string();
    assert!(
        err.contains("model.norm.weight") && err.contains("[8, 8]"),
        "{err}"
    );
    assert!(!dir.join("o1").exists() && !dir.join("o2").exists() && !dir.join("o3").exists());
}

/// config.json values that cannot describe this model are errors naming the key: another
/// architecture, a zero count (0 heads without a head_dim divided by zero, a panic, until
/// 2026-12-06), a non-positive RoPE base, sizes the weights cannot hold (in an exported folder or
/// a checkpoint).
#[test]
fn import_refuses_config_json_it_cannot_build() {
    let dir = temp_dir("bad-import-config");
    let ckpt = trained_tiny(&dir);
    let opts = f32_one_file();
    let good = export(&ckpt, &dir.join("hf"), &opts).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(good.dir.join("config.json")).unwrap()).unwrap();
    type Edit = dyn Fn(&mut serde_json::Value);
    let cases: [(&str, &Edit, &str); 9] = [
        (
            "llama",
            &|c| c["architectures"] = serde_json::json!(["LlamaForCausalLM"]),
            "LlamaForCausalLM",
        ),
        (
            "heads",
            &|c| {
                c["num_attention_heads"] = 0.into();
                c.as_object_mut().unwrap().remove("head_dim");
            },
            "num_attention_heads",
        ),
        (
            "experts",
            &|c| c["num_experts_per_tok"] = 0.into(),
            "num_experts_per_tok",
        ),
        ("rope", &|c| c["rope_theta"] = (-1.0).into(), "rope_theta"),
        (
            "untied",
            &|c| c["tie_word_embeddings"] = false.into(),
            "`tie_word_embeddings` is false",
        ),
        (
            "yarn",
            &|c| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "`rope_scaling` is {\"factor\":4.0,\"rope_type\":\"yarn\"}: scaled RoPE is not supported",
        ),
        // Null is what transformers writes for none: taken.
        ("rope-null", &|c| c["rope_scaling"] = serde_json::Value::Null, ""),
        // Python reads 0 as false: transformers and vLLM would untie it (found 2026-12-07).
        (
            "untied-0",
            &|c| c["tie_word_embeddings"] = 0.into(),
            "`tie_word_embeddings` is 0; expected true",
        ),
        // Sizes the weights cannot hold: listing 10^10 tensor names once hung (2026-12-06).
        (
            "layers",
            &|c| c["num_hidden_layers"] = 1_000_000_000.into(),
            "the config does not belong to these weights",
        ),
    ];
    for (name, edit, key) in cases {
        let target = dir.join(name);
        std::fs::create_dir_all(&target).unwrap();
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(good.dir.join(f), target.join(f)).unwrap();
        }
        let mut c = config.clone();
        edit(&mut c);
        std::fs::write(target.join("config.json"), c.to_string()).unwrap();
        let imported = import::import(&target, &dir.join(format!("{name}-out")));
        if key.is_empty() {
            imported.unwrap_or_else(|e| panic!("{name}: {e}"));
            continue;
        }
        let err = imported.unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains(key), "{name}: {err}");
        assert!(!dir.join(format!("{name}-out")).exists());
    }
    // A checkpoint's config.json edited the same way: eval, generate and export refuse it.
    let edited = dir.join("edited-ckpt");
    std::fs::create_dir_all(&edited).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::copy(ckpt.join(f), edited.join(f)).unwrap();
    }
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(edited.join("config.json")).unwrap()).unwrap();
    c["model"]["n_layers"] = 1_000_000_000.into();
    std::fs::write(edited.join("config.json"), c.to_string()).unwrap();
    let edited = edited.display().to_string();
    let out_dir = dir.join("edited-hf").display().to_string();
    for args in [
        &["generate", &edited, "--prompt", "hi"][..],
        &["eval", &edited, "--data", "data/shakespeare/sonnets.txt"],
        &["export", &edited, "--out", &out_dir],
    ] {
        refused(args, &["config.json", "does not belong to these weights"]);
    }
    // eval and generate read such a folder the same way, and say the same.
    let out = colossus(&[
        "eval",
        &dir.join("llama").display().to_string(),
        "--data",
        "data/shakespeare/sonnets.txt",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("architectures") && stderr.contains("LlamaForCausalLM"),
        "{stderr}"
    );
}

#[test]
fn greedy_decoding_with_and_without_cache_agree_for_64_tokens() {
    // A briefly trained tiny model (random weights fall straight into one repeated token).
    let dir = temp_dir("greedy");
    let cfg = tiny_config(&dir, &["train.steps=40", "model.max_seq_len=128"]);
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
    let device = Default::default();
    let model: Grok<Cpu> =
        checkpoint::load_weights(cfg.model.init(0, &device), &s.checkpoint.unwrap()).unwrap();
    let opts = |no_cache, temperature| SampleOptions {
        max_new_tokens: 64,
        temperature,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        stop: None,
        no_cache,
    };
    let prompt = [2u32, 53, 74, 67];
    let cached = generate(&model, &prompt, &opts(false, 0.0), &device, |_| {});
    let full = generate(&model, &prompt, &opts(true, 0.0), &device, |_| {});
    assert_eq!(cached.len(), 64);
    assert_eq!(cached, full);
    // Greedy output of a barely trained model may repeat; seeded sampling visits varied
    // contexts, and the cache must reproduce those too.
    let cached = generate(&model, &prompt, &opts(false, 1.0), &device, |_| {});
    let full = generate(&model, &prompt, &opts(true, 1.0), &device, |_| {});
    assert_eq!(cached, full);
    assert!(
        cached.iter().collect::<std::collections::HashSet<_>>().len() > 10,
        "{cached:?}"
    );
}

/// Python `tokenizers` encodes the fixture text with our tokenizer.json to these ids
/// (tests/fixtures/tokenizer/make_fixture.py); Colossus must agree.
#[test]
fn tokenizer_json_encodes_like_python_tokenizers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tok = tokenizer::load(&dir.join("tokenizer.json"), 512, "vocab_size").unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer::encode(&tok, text).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text);
    }
}

/// Training the BPE twice on the same files gives the same tokenizer (so a rerun reproduces ids).
#[test]
fn bpe_training_is_deterministic() {
    let files = [Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/sonnets.txt")];
    let a = tokenizer::train_bpe(&files, 512)
        .unwrap()
        .to_string(false)
        .unwrap();
    let b = tokenizer::train_bpe(&files, 512)
        .unwrap()
        .to_string(false)
        .unwrap();
    assert_eq!(a, b);
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/tokenizer.json"),
    )
    .unwrap();
    assert_eq!(
        a, fixture,
        "the committed fixture is the BPE trained on sonnets.txt with 512 entries"
    );
}

/// An imported (weights-only) checkpoint starts a fine-tuning run with `--resume PATH`: the first
/// step's loss is the trained model's, not a fresh model's (issue 5: import feeds fine-tuning).
#[test]
fn imported_checkpoint_fine_tunes_with_resume_path() {
    let dir = temp_dir("finetune");
    let steps = ["train.steps=30", "train.warmup_steps=2"];
    let cfg = tiny_config(&dir, &steps);
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let trained = train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap();
    let hf = export(&trained.checkpoint.unwrap(), &dir.join("hf"), &f32_one_file()).unwrap();
    let imported = import::import(&hf.dir, &dir.join("imported")).unwrap();

    let tokenizer = format!("data.tokenizer={}", imported.join("tokenizer.json").display());
    let mut sets = vec![
        "run_name=finetune",
        tokenizer.as_str(),
        "train.steps=2",
        "train.warmup_steps=1",
    ];
    sets.push("train.resume=never");
    let mut ft = tiny_config(&dir, &sets);
    ft.train.resume = colossus::config::Resume::Path(imported.display().to_string());
    let tuned = train::train::<CpuTrain>(&ft, &opts, &Default::default()).unwrap();
    let fresh_first = trained.losses[0];
    let trained_last = *trained.losses.last().unwrap();
    assert!(
        tuned.losses[0] < fresh_first - 0.3 && (tuned.losses[0] - trained_last).abs() < 0.3,
        "fine-tune first loss {} vs fresh {fresh_first} and trained {trained_last}",
        tuned.losses[0]
    );
    let state = checkpoint::state::read_state(&tuned.checkpoint.unwrap()).unwrap();
    assert_eq!(state.step, 2);
    // The exported folder is not a checkpoint: the error says so and how to import it (it was
    // "not a Colossus config: missing field `preset`", 2026-12-07).
    ft.train.resume = colossus::config::Resume::Path(hf.dir.display().to_string());
    let err = train::train::<CpuTrain>(&ft, &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key `train.resume`")
            && err.contains("is a Hugging Face folder")
            && err.contains("colossus import"),
        "{err}"
    );
}

/// Every special token that tokenizer_config.json names is in the exported vocabulary, with the
/// id config.json and generation_config.json give it. A given tokenizer with only an
/// end-of-text entry (GPT-2's kind) named `<|bos|>` and `<|pad|>` there anyway, which
/// `transformers` adds as new tokens one id past the model's vocabulary.
#[test]
fn exported_special_tokens_are_in_the_vocabulary() {
    let dir = temp_dir("special-tokens");
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let check = |hf: &Path, expected: [&str; 3]| {
        let tok = tokenizer::load(&hf.join("tokenizer.json"), 512, "test").unwrap();
        let (tok_config, config) = (
            read(&hf.join("tokenizer_config.json")),
            read(&hf.join("config.json")),
        );
        let generation = read(&hf.join("generation_config.json"));
        for (role, name) in ["bos", "eos", "pad"].into_iter().zip(expected) {
            assert_eq!(tok_config[format!("{role}_token")], name, "{role}");
            let id = tok
                .token_to_id(name)
                .unwrap_or_else(|| panic!("{name} is not in the vocabulary"));
            assert_eq!(config[format!("{role}_token_id")], id, "{role}");
            assert_eq!(generation[format!("{role}_token_id")], id, "{role}");
        }
    };
    // The trained BPE has all three.
    let hf = export(&trained_tiny(&dir), &dir.join("hf"), &f32_one_file()).unwrap();
    check(&hf.dir, [tokenizer::BOS, tokenizer::EOT, tokenizer::PAD]);

    // A given tokenizer with end-of-text only: bos and pad are end-of-text, by name and id.
    let bpe = tokenizer::train_bpe(
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/sonnets.txt")],
        300,
    )
    .unwrap();
    let json = bpe.to_string(false).unwrap();
    let json = json
        .replace(tokenizer::BOS, "<|spare_1|>")
        .replace(tokenizer::PAD, "<|spare_0|>");
    let given = dir.join("eot-only.json");
    std::fs::write(&given, json).unwrap();
    let given = format!("data.tokenizer={}", given.display());
    let cfg = tiny_config(
        &dir,
        &["run_name=given", &given, "train.steps=1", "train.warmup_steps=1"],
    );
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let run = train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap();
    let hf = export(&run.checkpoint.unwrap(), &dir.join("hf-given"), &f32_one_file()).unwrap();
    check(&hf.dir, [tokenizer::EOT; 3]);

    // A tokenizer ending documents with `</s>` (`data.eot_token`): exported as the eos, and
    // imported back as the checkpoint's end-of-text token, where generation stops.
    let json = bpe.to_string(false).unwrap().replace(tokenizer::EOT, "</s>");
    let given = dir.join("eos.json");
    std::fs::write(&given, json).unwrap();
    let given = format!("data.tokenizer={}", given.display());
    let sets = [
        "run_name=eos",
        &given,
        "data.eot_token=</s>",
        "train.steps=1",
        "train.warmup_steps=1",
    ];
    let run = train::train::<CpuTrain>(&tiny_config(&dir, &sets), &opts, &Default::default()).unwrap();
    let hf = export(&run.checkpoint.unwrap(), &dir.join("hf-eos"), &f32_one_file()).unwrap();
    check(&hf.dir, [tokenizer::BOS, "</s>", tokenizer::PAD]);
    let imported = import::import(&hf.dir, &dir.join("imported-eos")).unwrap();
    assert_eq!(checkpoint::read_config(&imported).unwrap().data.eot_token, "</s>");
    let (_, eot) =
        checkpoint::read_tokenizer(&imported, &checkpoint::read_config(&imported).unwrap()).unwrap();
    assert_eq!(eot, 2);
    // config.json's eos_token_id names the token: as a list too; one the tokenizer lacks, with
    // no `<|endoftext|>` to fall back on, is refused naming both files' parts.
    let config = hf.dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for (eos, imported) in [
        (serde_json::json!([2, 0]), Ok("</s>")),
        (serde_json::json!(9999), Err("9999")),
    ] {
        json["eos_token_id"] = eos;
        std::fs::write(&config, serde_json::to_string(&json).unwrap()).unwrap();
        let out = dir.join(format!("imported-{}", json["eos_token_id"]).replace([',', '[', ']'], "-"));
        match (import::import(&hf.dir, &out), imported) {
            (Ok(ckpt), Ok(name)) => assert_eq!(checkpoint::read_config(&ckpt).unwrap().data.eot_token, name),
            (Err(e), Err(id)) => {
                let e = e.to_string();
                assert!(
                    e.contains("tokenizer.json") && e.contains(&format!("eos_token_id {id}")),
                    "{e}"
                );
            }
            (got, want) => panic!("{:?} for {want:?}", got.map_err(|e| e.to_string())),
        }
    }
}

/// A weight float16 cannot hold (past ±65504), or one that is not finite, stops export naming
/// the tensor and element, before the folder exists: it was written as infinity, which an
/// engine loads without a word and serves as NaN. A weights file changed after its save is
/// refused by its checksum.
#[test]
fn export_refuses_weights_the_dtype_cannot_hold() {
    let dir = temp_dir("export-range");
    let ckpt = trained_tiny(&dir);
    let path = ckpt.join(checkpoint::WEIGHTS_FILE);
    let file = weights::read_safetensors(&path).unwrap();
    let cfg = checkpoint::read_config(&ckpt).unwrap();
    let list = params::list_from_config(&cfg.model);
    let target = &list[list.len() - 1].path;
    let write_with = |v: f32| {
        let mut values: Vec<Vec<f32>> = list.iter().map(|p| file.tensors[&p.path].1.clone()).collect();
        values.last_mut().unwrap()[3] = v;
        weights::write_safetensors(&list, &values, file.metadata.clone(), &path).unwrap();
        // Written as the trainer would have written them: the checksum list matches.
        restamp_checksum(&ckpt, checkpoint::WEIGHTS_FILE);
    };
    let f16 = ExportOptions {
        dtype: StoreDtype::F16,
        max_shard_bytes: u64::MAX,
        stop: None,
    };
    write_with(70_000.0);
    let out = dir.join("hf-f16");
    let err = export(&ckpt, &out, &f16).unwrap_err().to_string();
    assert!(
        err.contains(&format!("`{target}` element 3")) && err.contains("70000 is past float16's range"),
        "{err}"
    );
    assert!(!out.exists());
    // bf16 and f32 hold it.
    let bf16 = ExportOptions {
        dtype: StoreDtype::Bf16,
        max_shard_bytes: u64::MAX,
        stop: None,
    };
    export(&ckpt, &dir.join("hf-bf16"), &bf16).unwrap();
    // 65504, float16's largest, passes.
    write_with(65_504.0);
    export(&ckpt, &dir.join("hf-f16-max"), &f16).unwrap();
    write_with(f32::NAN);
    let err = export(&ckpt, &dir.join("hf-nan"), &f32_one_file())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("`{target}` element 3")) && err.contains("not finite"),
        "{err}"
    );

    // A byte changed after the save is caught by the checksums before it becomes a weight
    // (export and generate did not check them; resume did).
    write_with(1.0);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let out = dir.join("hf-flipped");
    let err = export(&ckpt, &out, &f32_one_file()).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(!out.exists());
    let run = colossus(&["generate", &ckpt.display().to_string(), "--max-new-tokens", "4"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
}

/// A signal during `export` or `import` ends it with exit 130 and removes the partial folder.
/// Both once installed no handler, so SIGINT left a hidden `.NAME.tmp-PID` directory as large
/// as the model beside `--out` for good.
#[test]
fn a_stop_during_export_or_import_leaves_nothing() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = temp_dir("export-stop");
    let ckpt = trained_tiny(&dir);
    let hf = export(&ckpt, &dir.join("hf"), &f32_one_file()).unwrap().dir;
    let staging = |name: &str| -> Vec<String> {
        std::fs::read_dir(&*dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!(".{name}.tmp-")))
            .collect()
    };
    for (command, from, name) in [("export", &ckpt, "x"), ("import", &hf, "y")] {
        let out = dir.join(name);
        let child = Command::new(env!("CARGO_BIN_EXE_colossus"))
            .args([command, from.to_str().unwrap(), "--out", out.to_str().unwrap()])
            // Sleeps after the weights are written, with the staging directory in place.
            .env("COLOSSUS_TEST_SAVE_PAUSE_MS", "4000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while staging(name).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{command}: no staging directory appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(130), "{command}: {stderr}");
        assert!(
            stderr.contains("signal received") && stderr.contains("is removed"),
            "{command}: {stderr}"
        );
        assert!(!out.exists(), "{command} published {}", out.display());
        assert!(staging(name).is_empty(), "{command} left {:?}", staging(name));
    }
}
