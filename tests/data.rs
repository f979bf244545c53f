//! The data pipeline: text and JSONL → shards → ids → text round trips; the sampler's epoch
//! coverage across ranks and its resumable cursor; the raw-text cache; validation during
//! training; and every bad-input case, each with an error naming file and line or offset.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use colossus::backend::CpuTrain;
use colossus::config::Config;
use colossus::data::corpus::{self, Reader};
use colossus::data::dataset::Windows;
use colossus::data::prepare::{self, PrepareOptions};
use colossus::data::shard::Dtype;
use colossus::data::{self, BatchSource, Cursor, Dataset, cache, tokenizer};
use colossus::train::{self, TrainOptions};
use common::*;

fn sonnets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/sonnets.txt")
}

fn opts(inputs: &[&Path]) -> PrepareOptions {
    PrepareOptions {
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        inputs_key: "inputs".into(),
        tokenizer: None,
        vocab_size: 300,
        vocab_key: "vocab_size".into(),
        jsonl_field: "text".into(),
        eot_token: tokenizer::EOT.into(),
        eot_key: "eot_token".into(),
        shard_tokens: 1 << 20,
        val_fraction: 0.0,
        skip_bad: false,
        dtype: None,
        threads: 2,
        overwrite: false,
        quiet: true,
        stop: None,
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The whole token stream of a split, in order.
fn stream(ds: &Dataset) -> Vec<u32> {
    ds.train.shards().iter().flat_map(|s| s.to_vec()).collect()
}

#[test]
fn text_and_jsonl_round_trip_through_shards() {
    let dir = temp_dir("data-roundtrip");
    let a = "First document.\nIt has lines, ünïcödé, and emoji 🦀.\n\n  Indented line\r\nend";
    let b = "Nested directory document\nwith \"quotes\" and a tab\there.\n";
    let jsonl_docs = [
        "a JSONL document\nspanning lines",
        "second — with “curly” quotes",
        "x",
    ];
    write(&dir.join("in/a.txt"), a);
    write(&dir.join("in/sub/b.txt"), b);
    let mut jsonl = String::new();
    for (i, d) in jsonl_docs.iter().enumerate() {
        jsonl.push_str(&serde_json::json!({"id": i, "text": d}).to_string());
        jsonl.push('\n');
    }
    jsonl.push('\n'); // a trailing blank line is not a document
    write(&dir.join("in/c.jsonl"), &jsonl);
    write(&dir.join("in/ignored.md"), "not a corpus file");
    // Hidden names are left out: macOS's binary `._NAME` companions, notebooks' checkpoints.
    write(&dir.join("in/._a.txt"), b"\x00\x05\x16\x07\xff binary".as_slice());
    write(&dir.join("in/.ipynb_checkpoints/a-checkpoint.txt"), a);
    // A directory holding text only under hidden names says so (it said "no .txt or .jsonl
    // files", and a corpus kept in `.data/` looked empty with no reason given).
    write(&dir.join("hidden-only/.data/a.txt"), a);
    let key = "data.corpus";
    let err = corpus::list_inputs(&[dir.join("hidden-only").display().to_string()], key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hidden names, which are left out (1 here, e.g.")
            && err.contains(".data; name one as an entry"),
        "{err}"
    );

    let mut o = opts(&[&dir.join("in")]);
    o.shard_tokens = 50; // many shards, documents cut across them
    let p = prepare::prepare(&o, &dir.join("out")).unwrap();
    assert_eq!(p.manifest.documents, 5);
    // Five pieces, two threads allowed: both ran.
    assert_eq!(p.threads, 2);
    assert!(p.summary().ends_with(", 2 threads)"), "{}", p.summary());
    assert_eq!(p.manifest.dtype, Dtype::U16);
    let ds = Dataset::open(&dir.join("out")).unwrap();
    let ids = stream(&ds);
    assert!(ds.train.shards().len() > 2);
    for s in &ds.train.shards()[..ds.train.shards().len() - 1] {
        assert_eq!(s.len(), 50);
    }
    // Sorted order: a.txt, c.jsonl (three lines), sub/b.txt; each followed by end-of-text.
    let eot = ds.manifest.eot_id;
    assert_eq!(*ids.last().unwrap(), eot);
    let docs: Vec<String> = ids[..ids.len() - 1]
        .split(|&t| t == eot)
        .map(|d| ds.tokenizer.decode(d, false).unwrap())
        .collect();
    let expected = [a, jsonl_docs[0], jsonl_docs[1], jsonl_docs[2], b];
    assert_eq!(docs, expected);

    // A validation split takes whole 4096-token blocks; train + val is the whole stream.
    let mut o = opts(&[&sonnets()]);
    o.val_fraction = 0.2;
    let p = prepare::prepare(&o, &dir.join("split")).unwrap();
    let whole = prepare::prepare(&opts(&[&sonnets()]), &dir.join("whole")).unwrap();
    // One 0.1 MB file is one piece: one thread ran, not the two allowed (the summary said 2).
    assert_eq!(whole.threads, 1);
    assert!(whole.summary().ends_with(", 1 thread)"), "{}", whole.summary());
    // Any number of threads is a cap: usize::MAX overflowed the round's size (found 2026-12-07).
    let mut o = opts(&[&sonnets()]);
    o.threads = usize::MAX;
    let many = prepare::prepare(&o, &dir.join("many-threads")).unwrap();
    assert_eq!(many.threads, 1);
    assert_eq!(
        stream(&Dataset::open(&dir.join("many-threads")).unwrap()),
        stream(&Dataset::open(&dir.join("whole")).unwrap())
    );
    let (t, v) = (p.manifest.train_tokens(), p.manifest.val_tokens());
    assert_eq!(t + v, whole.manifest.train_tokens());
    assert!(v > 0 && v % prepare::VAL_BLOCK_TOKENS == 0, "{v}");
    assert!((v as f64 / (t + v) as f64 - 0.2).abs() < 0.1);
}

/// Symbolic links are followed, but a link back into the walk and a file reached twice are
/// refused, naming the path. Before, a link to a parent directory listed the corpus about 40
/// times over (until the kernel's link limit) and training went ahead on it.
#[test]
fn corpus_links_are_followed_but_loops_and_twice_listed_files_are_refused() {
    let dir = temp_dir("data-links");
    write(&dir.join("in/a.txt"), "first\n");
    write(&dir.join("shared/b.txt"), "second\n");
    let entries = |xs: &[&Path]| xs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    let names = |inputs: Vec<corpus::Input>| {
        inputs
            .iter()
            .map(|i| i.path.strip_prefix(&*dir).unwrap().display().to_string())
            .collect::<Vec<_>>()
    };
    // A link to a directory outside the corpus is read like a directory.
    std::os::unix::fs::symlink(dir.join("shared"), dir.join("in/linked")).unwrap();
    let listed = corpus::list_inputs(&entries(&[&dir.join("in")]), "data.corpus").unwrap();
    assert_eq!(names(listed), ["in/a.txt", "in/linked/b.txt"]);

    // The same file through two entries, or through a link beside it, is refused.
    let twice = entries(&[&dir.join("in"), &dir.join("shared/b.txt")]);
    let err = corpus::list_inputs(&twice, "data.corpus").unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("shared/b.txt") && err.contains("in/linked/b.txt"),
        "{err}"
    );
    assert!(err.contains("`data.corpus`") && err.contains("twice"), "{err}");
    std::os::unix::fs::symlink(dir.join("in/a.txt"), dir.join("in/z.txt")).unwrap();
    let err = corpus::list_inputs(&entries(&[&dir.join("in")]), "INPUTS")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in/z.txt") && err.contains("in/a.txt") && err.contains("twice"),
        "{err}"
    );
    std::fs::remove_file(dir.join("in/z.txt")).unwrap();

    // A link to a directory the walk is inside of: refused, naming the path and the directory.
    std::os::unix::fs::symlink(&*dir, dir.join("in/up")).unwrap();
    let err = corpus::list_inputs(&entries(&[&dir.join("in")]), "data.corpus").unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let err = err.to_string();
    let real_in = std::fs::canonicalize(dir.join("in")).unwrap();
    assert!(
        err.contains("in/up/in") && err.contains(&format!("back to {}", real_in.display())),
        "{err}"
    );

    // Through the binary: prepare stops with exit 2 and writes nothing.
    let out = dir.join("shards");
    let run = Command::new(env!("CARGO_BIN_EXE_colossus"))
        .args(["prepare", "--vocab-size", "300", "--out"])
        .arg(&out)
        .arg(dir.join("in"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("symbolic link") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// A UTF-8 byte-order mark opening a file (Windows editors write one) is dropped: JSONL's first
/// line was "not JSON: expected value at line 1 column 1", and text got a stray token. Byte
/// offsets in errors stay offsets in the file.
#[test]
fn byte_order_marks_are_not_text() {
    let dir = temp_dir("data-bom");
    write(&dir.join("in/a.txt"), "\u{feff}first document\n");
    write(
        &dir.join("in/b.jsonl"),
        "\u{feff}{\"text\": \"second\"}\n{\"text\": \"third\"}\n",
    );
    prepare::prepare(&opts(&[&dir.join("in")]), &dir.join("out")).unwrap();
    let ds = Dataset::open(&dir.join("out")).unwrap();
    let ids = stream(&ds);
    let docs: Vec<String> = ids[..ids.len() - 1]
        .split(|&t| t == ds.manifest.eot_id)
        .map(|d| ds.tokenizer.decode(d, false).unwrap())
        .collect();
    assert_eq!(docs, ["first document\n", "second", "third"]);
    assert_eq!(
        corpus::read_document(&dir.join("in/a.txt")).unwrap(),
        "first document\n"
    );

    // Invalid UTF-8 after a mark: the offset counts the mark's 3 bytes.
    write(&dir.join("bad/c.txt"), b"\xef\xbb\xbfabc\xff".as_slice());
    let err = prepare::prepare(&opts(&[&dir.join("bad")]), &dir.join("out-bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.txt") && err.contains("byte offset 6"), "{err}");
    let err = corpus::read_document(&dir.join("bad/c.txt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("byte offset 6"), "{err}");
}

/// Large text files are tokenized in pieces cut at lone newlines; the ids equal whole-text ids.
#[test]
fn pieces_tokenize_like_the_whole_text() {
    let text = corpus::read_document(&sonnets()).unwrap();
    let inputs = corpus::list_inputs(&[sonnets().display().to_string()], "x").unwrap();
    let mut reader = Reader::new(inputs, "text", false).with_piece_bytes(5000);
    let mut pieces = Vec::new();
    while let Some(p) = reader.next_piece().unwrap() {
        pieces.push(p);
    }
    assert!(pieces.len() > 10);
    assert!(pieces[..pieces.len() - 1].iter().all(|p| !p.end_of_doc));
    assert!(pieces.last().unwrap().end_of_doc);
    let texts: Vec<String> = pieces.into_iter().map(|p| p.text).collect();
    assert_eq!(texts.concat(), text);
    let tok = tokenizer::train_bpe(&[sonnets()], 400).unwrap();
    let whole = tokenizer::encode(&tok, &text).unwrap();
    let joined: Vec<u32> = texts
        .iter()
        .flat_map(|t| tokenizer::encode(&tok, t).unwrap())
        .collect();
    assert_eq!(joined, whole);
    // And the tokenizer trained from pieces is the one trained from the file.
    assert_eq!(
        tokenizer::train_bpe_on(&texts, 400)
            .unwrap()
            .to_string(false)
            .unwrap(),
        tok.to_string(false).unwrap()
    );
}

fn small_dataset(name: &str, shard_tokens: u64) -> (common::TempDir, Dataset) {
    let dir = temp_dir(name);
    let mut o = opts(&[&sonnets()]);
    o.shard_tokens = shard_tokens;
    prepare::prepare(&o, &dir.join("out")).unwrap();
    let ds = Dataset::open(&dir.join("out")).unwrap();
    (dir, ds)
}

#[test]
fn sampler_covers_each_epoch_once_disjointly_across_ranks() {
    let (_dir, ds) = small_dataset("data-coverage", 997);
    let seq = 16;
    let windows = Windows::new(&ds.train, seq, false);
    let n = windows.len();
    // No window crosses a shard boundary.
    let mut ends = Vec::new();
    let mut acc = 0;
    for s in ds.train.shards() {
        acc += s.len();
        ends.push(acc);
    }
    for w in 0..n {
        let (a, b) = (windows.start(w), windows.start(w) + seq as u64);
        assert_eq!(
            ends.partition_point(|&e| e <= a),
            ends.partition_point(|&e| e <= b),
            "window {w} spans shards"
        );
    }
    let (world, batch) = (3usize, 4usize);
    let mut ranks: Vec<_> = (0..world)
        .map(|r| ds.sampler(seq, false, 7, r, world).unwrap())
        .collect();
    let mut global = Vec::new();
    let steps = (n as usize).div_ceil(world * batch) + 2;
    let g = (world * batch) as u64;
    for step in 0..steps as u64 {
        let mut step_ids = Vec::new();
        for s in &mut ranks {
            step_ids.extend(s.next_ids(batch));
        }
        // Ranks take disjoint windows; only a step that straddles the end of an epoch may see a
        // window twice (once as the epoch's last, once as the next epoch's first samples).
        if (step * g) / n == (step * g + g - 1) / n {
            let mut uniq = step_ids.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), step_ids.len(), "ranks overlap within step {step}");
        }
        global.extend(step_ids);
    }
    let mut epoch0 = global[..n as usize].to_vec();
    assert_ne!(epoch0, (0..n).collect::<Vec<_>>(), "not shuffled");
    epoch0.sort();
    assert_eq!(
        epoch0,
        (0..n).collect::<Vec<_>>(),
        "epoch 0 is not every window once"
    );
    // Epoch 1 is another permutation; the cursors of all ranks agree.
    let tail = &global[n as usize..];
    assert_ne!(tail, &global[..tail.len()]);
    assert!(ranks.windows(2).all(|p| p[0].cursor() == p[1].cursor()));
    assert_eq!(ranks[0].cursor().epoch, 1);
    // The global order does not depend on the world size.
    let mut one = ds.sampler(seq, false, 7, 0, 1).unwrap();
    let single: Vec<u64> = (0..steps).flat_map(|_| one.next_ids(world * batch)).collect();
    assert_eq!(single, global);
    // Another seed, another order.
    let mut other = ds.sampler(seq, false, 8, 0, 1).unwrap();
    assert_ne!(other.next_ids(12), global[..12]);
    // Batches are the windows' tokens, targets shifted by one.
    let mut s = ds.sampler(seq, false, 7, 0, 1).unwrap();
    let b = s.next_batch(2, seq);
    let mut want = Vec::new();
    windows.read(&ds.train, global[0], &mut want);
    assert_eq!(
        b.inputs[..seq],
        want[..seq].iter().map(|&t| t as i64).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        b.targets[..seq],
        want[1..].iter().map(|&t| t as i64).collect::<Vec<_>>()[..]
    );
}

#[test]
fn restored_cursor_reproduces_the_batch_sequence() {
    let (_dir, ds) = small_dataset("data-cursor", 1 << 20);
    let seq = 32;
    let mut a = ds.sampler(seq, false, 3, 0, 1).unwrap();
    let n = a.samples_per_epoch();
    // Run past an epoch boundary before saving.
    let pre = (n as usize / 8) + 3;
    for _ in 0..pre {
        a.next_batch(8, seq);
    }
    let saved: Cursor = serde_json::from_str(&serde_json::to_string(&a.cursor()).unwrap()).unwrap();
    assert_eq!(saved.epoch, 1);
    let after: Vec<_> = (0..20).map(|_| a.next_batch(8, seq)).collect();

    let mut b = ds.sampler(seq, false, 999, 0, 1).unwrap(); // the cursor carries the RNG key
    assert_eq!(b.restore(saved), None);
    let again: Vec<_> = (0..20).map(|_| b.next_batch(8, seq)).collect();
    assert_eq!(after, again);

    // Resuming on two ranks of 4 gives the same global batches, split between them.
    let mut r: Vec<_> = (0..2).map(|k| ds.sampler(seq, false, 3, k, 2).unwrap()).collect();
    for s in &mut r {
        s.restore(saved);
    }
    for want in &after {
        let (x, y) = (r[0].next_batch(4, seq), r[1].next_batch(4, seq));
        assert_eq!([x.inputs, y.inputs].concat(), want.inputs);
    }

    // Different data (here another seq_len) is continued with a note, not silently.
    let mut c = ds.sampler(seq / 2, false, 3, 0, 1).unwrap();
    assert!(c.restore(saved).unwrap().contains("windows per epoch"));
}

#[test]
fn raw_text_is_prepared_once_and_reused_until_inputs_change() {
    let dir = temp_dir("data-cache");
    let file = dir.join("corpus/doc.txt");
    write(&file, std::fs::read(sonnets()).unwrap());
    let o = opts(&[&dir.join("corpus")]);
    let root = dir.join("cache");
    let (first, made) = cache::prepare_cached(&o, &root).unwrap();
    assert!(made.is_some());
    let (second, made) = cache::prepare_cached(&o, &root).unwrap();
    assert_eq!((first.clone(), made.is_none()), (second, true));
    // Another vocabulary size or changed input: a new cache entry.
    let o2 = PrepareOptions {
        vocab_size: 310,
        ..o.clone()
    };
    assert_ne!(cache::key(&o2).unwrap(), cache::key(&o).unwrap());
    write(&file, "changed text\n");
    let (third, made) = cache::prepare_cached(&o, &root).unwrap();
    assert!(made.is_some());
    assert_ne!(third, first);
    // Only complete entries: no staging leftovers.
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn issue_6_a_process_that_loses_the_cache_race_keeps_the_winners_directory() {
    // The ranks of a multi-process job on one machine may all find the cache empty and prepare
    // it at once. Before the fix the last to finish replaced the directory the first was
    // already reading, which failed at start-up with "cannot open shard". Here the loser's
    // step runs after the winner committed: it must use the winner's files, not replace them.
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("data-cache-race");
    let o = opts(&[&sonnets()]);
    let (winner, made) = cache::prepare_cached(&o, &dir.join("cache")).unwrap();
    assert!(made.is_some());
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let before = (inode(&winner), inode(&winner.join("manifest.json")));
    let (loser, made) = cache::prepare_unless_committed(&o, &winner).unwrap();
    assert_eq!(loser, winner);
    assert!(made.is_none(), "the loser reports that it prepared nothing");
    assert_eq!(
        (inode(&winner), inode(&winner.join("manifest.json"))),
        before,
        "the committed directory was replaced"
    );
    let names: Vec<String> = std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "the loser's staging directory is gone: {names:?}");
}

fn prepare_err(o: &PrepareOptions, out: &Path) -> String {
    let err = prepare::prepare(o, out).unwrap_err();
    assert!(!out.exists(), "{} was left behind", out.display());
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    err.to_string()
}

#[test]
fn bad_documents_are_errors_naming_file_and_place_or_counted_skips() {
    let dir = temp_dir("data-bad-docs");
    let good = dir.join("good.txt");
    write(&good, std::fs::read(sonnets()).unwrap());
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "latin1.txt",
            b"caf\xe9 au lait".to_vec(),
            vec!["latin1.txt", "UTF-8", "byte offset 3"],
        ),
        ("empty.txt", Vec::new(), vec!["empty.txt", "empty file"]),
        (
            "nofield.jsonl",
            b"{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n".to_vec(),
            vec!["nofield.jsonl", "line 2", "`text`", "missing"],
        ),
        (
            "notjson.jsonl",
            b"{\"text\": \"ok\"}\n\n{\"text\": \"broken\"\n".to_vec(),
            vec!["notjson.jsonl", "line 3", "not JSON"],
        ),
        (
            "badutf8.jsonl",
            b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n".to_vec(),
            vec!["badutf8.jsonl", "line 2", "byte offset 25"],
        ),
    ];
    let out = dir.join("out");
    for (name, bytes, want) in &cases {
        let path = dir.join("bad").join(name);
        write(&path, bytes);
        let err = prepare_err(&opts(&[&good, &path]), &out);
        for w in want {
            assert!(err.contains(w), "{name}: expected {w:?} in {err}");
        }
        assert!(err.contains("skip_bad"), "{err}");
    }
    // With skip_bad every one is skipped and counted; the good documents are kept.
    let mut o = opts(&[&good, &dir.join("bad")]);
    o.skip_bad = true;
    let p = prepare::prepare(&o, &out).unwrap();
    assert_eq!(p.skips.total(), 5, "{:?}", p.skips);
    assert_eq!(p.manifest.skipped["invalid UTF-8"], 2);
    assert_eq!(p.manifest.documents, 1 + 3); // sonnets + three good JSONL lines
    assert!(p.summary().contains("skipped 5 bad documents"), "{}", p.summary());
}

#[test]
fn tokenizer_too_big_for_u16_shards_is_refused() {
    let dir = temp_dir("data-dtype");
    let mut vocab = serde_json::Map::new();
    for i in 0..69_999u32 {
        vocab.insert(format!("t{i}"), i.into());
    }
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": [{"id": 69_999, "content": tokenizer::EOT, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    let path = dir.join("big.json");
    write(&path, tok.to_string());
    let text = dir.join("t.txt");
    write(&text, "t1 t2 t69998\n");
    let mut o = opts(&[&text]);
    o.tokenizer = Some(path.clone());
    o.vocab_size = 70_000;
    o.dtype = Some(Dtype::U16);
    let err = prepare_err(&o, &dir.join("out"));
    assert!(
        err.contains("big.json") && err.contains("do not fit u16"),
        "{err}"
    );
    // Chosen automatically, the dtype is u32 and the ids survive.
    o.dtype = None;
    let p = prepare::prepare(&o, &dir.join("out")).unwrap();
    assert_eq!(p.manifest.dtype, Dtype::U32);
    let ds = Dataset::open(&dir.join("out")).unwrap();
    assert_eq!(stream(&ds), vec![1, 2, 69_998, 69_999]);
}

#[test]
fn corrupt_shards_and_mismatched_tokenizers_are_refused() {
    let (dir, _) = small_dataset("data-corrupt", 5000);
    let out = dir.join("out");
    let shard = out.join("train-000001.bin");
    let original = std::fs::read(&shard).unwrap();
    let open_err = || Dataset::open(&out).err().expect("must fail").to_string();

    std::fs::write(&shard, &original[..original.len() - 3]).unwrap();
    let err = open_err();
    assert!(
        err.contains("train-000001.bin") && err.contains("truncated"),
        "{err}"
    );

    let mut foreign = original.clone();
    foreign[..8].copy_from_slice(b"PK\x03\x04zip!");
    std::fs::write(&shard, &foreign).unwrap();
    let err = open_err();
    assert!(
        err.contains("train-000001.bin") && err.contains("bad magic"),
        "{err}"
    );

    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&shard, &flipped).unwrap();
    let err = open_err();
    assert!(
        err.contains("train-000001.bin") && err.contains("checksum"),
        "{err}"
    );
    // `data.verify_checksums: false` skips reading payloads (headers and sizes still checked).
    Dataset::open_with(&out, false).unwrap();
    std::fs::write(&shard, &original[..original.len() - 3]).unwrap();
    assert!(Dataset::open_with(&out, false).is_err());
    std::fs::write(&shard, &original).unwrap();
    Dataset::open(&out).unwrap();

    // A config naming another tokenizer than the manifest's.
    let other = dir.join("other.json");
    tokenizer::save(&tokenizer::train_bpe(&[sonnets()], 280).unwrap(), &other).unwrap();
    let cfg: Config = tiny_config(
        &dir,
        &[
            &format!("data.shards={}", out.display()),
            &format!("data.tokenizer={}", other.display()),
        ],
    );
    let err = data::training_data(&cfg, true).err().unwrap().to_string();
    assert!(
        err.contains("manifest.json") && err.contains("tokenizer_sha256") && err.contains("other.json"),
        "{err}"
    );
    // Its own tokenizer passes.
    let cfg = tiny_config(
        &dir,
        &[
            &format!("data.shards={}", out.display()),
            &format!("data.tokenizer={}", out.join("tokenizer.json").display()),
        ],
    );
    // The tiny preset's data.val_fraction (0.01) is not what these shards were prepared with
    // (0): the log says which split is used (it said nothing before).
    let (_, note) = data::training_data(&cfg, true).unwrap();
    assert!(
        note.contains("data.val_fraction: 0.01 (")
            && note.contains("not applied")
            && note.contains("validation split of 0,"),
        "{note}"
    );
    let same = tiny_config(
        &dir,
        &[&format!("data.shards={}", out.display()), "data.val_fraction=0"],
    );
    let (_, note) = data::training_data(&same, true).unwrap();
    assert!(!note.contains("val_fraction"), "{note}");
    // An edited tokenizer.json in the shard directory is caught too.
    std::fs::write(out.join("tokenizer.json"), std::fs::read(&other).unwrap()).unwrap();
    assert!(open_err().contains("tokenizer_sha256"));
}

/// Training on prepared shards logs a validation loss every `eval_every` steps.
#[test]
fn training_on_shards_logs_validation_loss() {
    let dir = temp_dir("data-train-shards");
    let mut o = opts(&[&sonnets()]);
    o.vocab_size = 512;
    o.val_fraction = 0.2;
    prepare::prepare(&o, &dir.join("shards")).unwrap();
    let shards = format!("data.shards={}", dir.join("shards").display());
    let cfg = tiny_config(
        &dir,
        &[
            &shards,
            "train.steps=4",
            "train.warmup_steps=1",
            "train.micro_batch=2",
            "data.seq_len=32",
            "train.eval_every=2",
            "train.eval_batches=2",
        ],
    );
    let quiet = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    train::train::<CpuTrain>(&cfg, &quiet, &Default::default()).unwrap();
    let metrics = std::fs::read_to_string(dir.join("tiny/metrics.jsonl")).unwrap();
    let val: Vec<(u64, f64)> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("val_loss")?.as_f64()?)))
        .collect();
    assert_eq!(val.iter().map(|v| v.0).collect::<Vec<_>>(), [2, 4]);
    assert!(val.iter().all(|v| (v.1 - 512f64.ln()).abs() < 1.0), "{val:?}");
    // `train.eval_batches` past the split takes all of it: usize::MAX overflowed the count of
    // windows wanted (found 2026-12-07).
    let ds = Dataset::open(&dir.join("shards")).unwrap();
    let all = ds.val_batches(usize::MAX, 2, 32);
    let windows: usize = all.iter().map(|b| b.batch).sum();
    assert!(windows > 100, "{windows}");
    assert_eq!(all, ds.val_batches(1 << 20, 2, 32));

    // No validation tokens but eval_every set: refused, naming the key.
    let cfg = tiny_config(
        &dir,
        &["train.eval_every=2", "data.val_fraction=0", "run_name=noval"],
    );
    let err = train::train::<CpuTrain>(&cfg, &quiet, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.val_fraction"), "{err}");
}

#[test]
fn prepare_command_writes_shards_and_refuses_bad_input_with_exit_2() {
    let dir = temp_dir("data-cli");
    let bin = env!("CARGO_BIN_EXE_colossus");
    let out = dir.join("shards");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let o = run(&[
        "prepare",
        &sonnets().display().to_string(),
        "--vocab-size",
        "300",
        "--out",
        &out.display().to_string(),
        "--shard-tokens",
        "10000",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("prepared") && stdout.contains("u16"), "{stdout}");
    assert!(Dataset::open(&out).unwrap().train.shards().len() > 2);
    // Existing output is not replaced without --overwrite.
    let o = run(&[
        "prepare",
        &sonnets().display().to_string(),
        "--vocab-size",
        "300",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    // --overwrite replaces shards, but not a directory that also holds something else (it used
    // to remove any directory named by --out; found 2026-12-06).
    let overwrite = |out: &Path| {
        let out = out.display().to_string();
        let args = [sonnets().display().to_string(), "--out".into(), out];
        let args = ["prepare", "--vocab-size", "300", "--overwrite"]
            .map(String::from)
            .into_iter()
            .chain(args);
        Command::new(bin).args(args).output().unwrap()
    };
    let o = overwrite(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write(&out.join("notes.txt"), "mine");
    let o = overwrite(&out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nothing but token shards") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    assert!(Dataset::open(&out).is_ok());

    let bad = dir.join("bad.jsonl");
    write(&bad, "{\"text\": \"fine\"}\nnot json at all\n");
    let o = run(&[
        "prepare",
        &bad.display().to_string(),
        "--vocab-size",
        "300",
        "--out",
        &dir.join("x").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(!dir.join("x").exists());
    // An empty input (an unset shell variable) is named by position; it said ": cannot read".
    let (sonnets, y) = (
        sonnets().display().to_string(),
        dir.join("y").display().to_string(),
    );
    refused(
        &["prepare", &sonnets, "", "--vocab-size", "300", "--out", &y],
        &["flag INPUTS: entry 2 is empty"],
    );
}

/// Problems found after validation name the config file, or the flag, the value came from: a
/// vocabulary too small for a byte-level BPE once said `config config:` whatever its origin
/// (found 2026-12-06).
#[test]
fn errors_after_validation_name_the_file_or_flag() {
    let dir = temp_dir("data-source");
    let cfg = tiny_config(&dir, &["model.vocab_size=100"]);
    let err = data::training_data(&cfg, true).err().unwrap().to_string();
    assert!(
        err.contains("configs/tiny.yaml") && err.contains("`model.vocab_size`") && err.contains("259"),
        "{err}"
    );
    // Too little text for one window names the corpus, not the cache it was prepared into (it
    // was a training error, exit 1, naming neither).
    let short = dir.join("short.txt");
    write(&short, "hello world\n");
    let cfg = tiny_config(&dir, &[&format!("data.corpus=[{}]", short.display())]);
    let err = data::training_data(&cfg, true).err().unwrap();
    assert_eq!(err.exit_code(), 2, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("configs/tiny.yaml") && err.contains("`data.corpus`") && err.contains("short.txt"),
        "{err}"
    );
    // The validation split's check names the file too.
    let cfg = tiny_config(&dir, &["data.val_fraction=0", "train.eval_every=5"]);
    let (ds, _) = data::training_data(&cfg, true).unwrap();
    let err = colossus::train::eval::validation_set(&cfg, &ds)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("configs/tiny.yaml") && err.contains("`data.val_fraction`"),
        "{err}"
    );

    let out = dir.join("shards").display().to_string();
    let sonnets = sonnets().display().to_string();
    let flag = ["prepare", &sonnets, "--vocab-size", "100", "--out", &out];
    refused(&flag, &["flag --vocab-size", "259"]);
    // A vocabulary the BPE trainer cannot reserve tables for is refused, not an abort
    // ("memory allocation of 283467841552 bytes failed", 2026-12-07).
    let flag = ["prepare", &sonnets, "--vocab-size", "4294967296", "--out", &out];
    refused(&flag, &["flag --vocab-size", "4194304", "tokenizer.json"]);
    let cfg = tiny_config(&dir, &["model.vocab_size=5000000"]);
    let err = data::training_data(&cfg, true).err().unwrap().to_string();
    assert!(
        err.contains("`model.vocab_size`") && err.contains("4194304"),
        "{err}"
    );
    let corpus = format!("data.corpus=[{sonnets}]");
    let set = ["--set", &corpus, "--set", "model.vocab_size=100", "--out", &out];
    let from_config = [&["prepare", "--config", "configs/tiny.yaml"][..], &set].concat();
    refused(&from_config, &["configs/tiny.yaml", "`model.vocab_size`"]);
    // A given tokenizer larger than the size allowed: the flag, or the config's key and file,
    // whichever set it (the flag's case once said "model.vocab_size", found 2026-12-06).
    let tok = dir.join("tok.json");
    tokenizer::save(
        &tokenizer::train_bpe(&[PathBuf::from(&sonnets)], 280).unwrap(),
        &tok,
    )
    .unwrap();
    let tok = tok.display().to_string();
    let flag = [
        "prepare",
        &sonnets,
        "--tokenizer",
        &tok,
        "--vocab-size",
        "100",
        "--out",
        &out,
    ];
    let err = refused(
        &flag,
        &["tok.json", "280 entries", "100 that flag --vocab-size allows"],
    );
    assert!(!err.contains("model.vocab_size"), "{err}");
    let given = format!("data.tokenizer={tok}");
    let from_config = [&from_config[..], &["--set", &given]].concat();
    refused(
        &from_config,
        &[
            "280 entries",
            "100 that `model.vocab_size` of configs/tiny.yaml allows",
        ],
    );
    assert!(!dir.join("shards").exists());
}

/// A given tokenizer's end-of-text token is `data.eot_token` (`prepare --eot-token`), not always
/// `<|endoftext|>`: a tokenizer ending documents with `</s>` could not be trained on at all.
/// The shards' token must be the config's, and the name needs a tokenizer that has it.
#[test]
fn a_given_tokenizer_names_its_end_of_text_token() {
    let dir = temp_dir("data-eot");
    let json = tokenizer::train_bpe(&[sonnets()], 280)
        .unwrap()
        .to_string(false)
        .unwrap();
    let given = dir.join("eos.json");
    write(&given, json.replace(tokenizer::EOT, "</s>"));
    let with_given = format!("data.tokenizer={}", given.display());
    let err = data::training_data(&tiny_config(&dir, &[&with_given]), true)
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 2, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("eos.json") && err.contains("`<|endoftext|>`") && err.contains("`data.eot_token` of /"),
        "{err}"
    );
    let (ds, _) =
        data::training_data(&tiny_config(&dir, &[&with_given, "data.eot_token=</s>"]), true).unwrap();
    assert_eq!(ds.manifest.eot_id, ds.tokenizer.token_to_id("</s>").unwrap());
    assert_eq!(*stream(&ds).last().unwrap(), ds.manifest.eot_id);

    // Shards prepared with it, then opened under a config naming another token.
    let out = dir.join("shards");
    let sonnets = sonnets().display().to_string();
    let (tok, out_s) = (given.display().to_string(), out.display().to_string());
    let prep = [
        "prepare",
        &sonnets,
        "--tokenizer",
        &tok,
        "--out",
        &out_s,
        "--quiet",
    ];
    let run = colossus(&[&prep[..], &["--eot-token", "</s>"]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let shards = format!("data.shards={out_s}");
    let err = data::training_data(&tiny_config(&dir, &[&shards, "data.eot_token=<|pad|>"]), true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("manifest.json") && err.contains("(`</s>`)") && err.contains("`<|pad|>` (id 0)"),
        "{err}"
    );
    data::training_data(&tiny_config(&dir, &[&shards, "data.eot_token=</s>"]), true).unwrap();

    // The name belongs to a given tokenizer: the trained BPE's is fixed.
    let run = colossus(&[
        "prepare",
        &sonnets,
        "--vocab-size",
        "300",
        "--eot-token",
        "</s>",
        "--out",
        &out_s,
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("flag --eot-token"));
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let err = colossus::config::load(&tiny, &["data.eot_token=</s>".to_string()]).unwrap_err();
    assert!(
        err.to_string().contains("`data.eot_token`") && err.to_string().contains("data.tokenizer"),
        "{err}"
    );

    // A given tokenizer that cannot encode the corpus (word-level, no unknown token) is the
    // input at fault: exit 2 naming it (was exit 1, "training: tokenizing: ...", naming nothing).
    let word_level = dir.join("word-level.json");
    let model = serde_json::json!({"type": "WordLevel", "vocab": {"<|endoftext|>": 0, "the": 1}, "unk_token": "<unk>"});
    let json = serde_json::json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": model});
    write(&word_level, json.to_string());
    let run = colossus(&[
        "prepare",
        &sonnets,
        "--tokenizer",
        &word_level.display().to_string(),
        "--out",
        &dir.join("wl").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("word-level.json: cannot encode") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!dir.join("wl").exists());
}

/// A given tokenizer.json's `truncation` and `padding` (saved from an inference pipeline) are
/// not applied to the corpus: they cut the Sonnets to 17 tokens and padded each short document
/// to 4096 pad ids, silently. The stream equals the plain tokenizer's.
#[test]
fn a_given_tokenizers_truncation_and_padding_do_not_touch_the_corpus() {
    let dir = temp_dir("data-truncation");
    let plain = tokenizer::train_bpe(&[sonnets()], 300).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&plain.to_string(false).unwrap()).unwrap();
    json["truncation"] =
        serde_json::json!({"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 512}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<|pad|>"});
    let (plain_path, shaped_path) = (dir.join("plain.json"), dir.join("shaped.json"));
    tokenizer::save(&plain, &plain_path).unwrap();
    write(&shaped_path, json.to_string());
    write(&dir.join("in/a-short.txt"), "hello there\n");
    std::fs::copy(sonnets(), dir.join("in/b-sonnets.txt")).unwrap();
    let streams: Vec<Vec<u32>> = [&plain_path, &shaped_path]
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            let mut o = opts(&[&dir.join("in")]);
            o.tokenizer = Some(tok.to_path_buf());
            let out = dir.join(format!("out-{i}"));
            prepare::prepare(&o, &out).unwrap();
            stream(&Dataset::open(&out).unwrap())
        })
        .collect();
    assert!(streams[0].len() > 60_000, "{}", streams[0].len());
    let lens = (streams[0].len(), streams[1].len());
    assert!(streams[0] == streams[1], "{lens:?} tokens");
}

/// A stop (SIGINT/SIGTERM) during preparation ends it with exit status 130 and removes the
/// partial output: a second signal was the only way out, and it left the hidden staging
/// directory, up to the corpus's size, behind for good.
#[test]
fn a_stop_during_preparation_removes_the_partial_output() {
    let dir = temp_dir("data-stop");
    let stop = Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let o = PrepareOptions {
        stop: stop.clone(),
        ..opts(&[&sonnets()])
    };
    let err = prepare::prepare(&o, &dir.join("out")).unwrap_err();
    assert_eq!(err.exit_code(), 130, "{err}");
    assert!(err.to_string().contains("partial output is removed"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The same through a config's raw-text cache.
    let cfg = tiny_config(&dir, &[]);
    let err = data::training_data_or_stop(&cfg, true, stop).err().unwrap();
    assert_eq!(err.exit_code(), 130, "{err}");
    let cache = data::cache_root(&cfg);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A directory written by hand from docs/data-format.md (as a Python writer would) opens and reads.
#[test]
fn hand_written_shards_following_the_docs_open() {
    let dir = temp_dir("data-handwritten");
    let tok = tokenizer::train_bpe(&[sonnets()], 280).unwrap();
    tokenizer::save(&tok, &dir.join("tokenizer.json")).unwrap();
    let ids: Vec<u32> = (0..100).map(|i| i * 2 % 280).collect();
    let payload: Vec<u8> = ids.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect();
    let crc = crc32fast::hash(&payload);
    let mut file = b"CLSSHARD".to_vec();
    for v in [1u32, 2] {
        file.extend(v.to_le_bytes());
    }
    file.extend((ids.len() as u64).to_le_bytes());
    file.extend(crc.to_le_bytes());
    file.extend(0u32.to_le_bytes());
    file.extend(&payload);
    write(&dir.join("train-000000.bin"), &file);
    let sha = colossus::data::manifest::sha256_file(&dir.join("tokenizer.json")).unwrap();
    let manifest = serde_json::json!({
        "format": "colossus-shards", "format_version": 1, "dtype": "u16",
        "vocab_size": 280, "eot_id": 2, "tokenizer": "tokenizer.json", "tokenizer_sha256": sha,
        "val_fraction": 0.0, "val_block_tokens": 4096,
        "train": [{"file": "train-000000.bin", "tokens": 100, "crc32": crc}], "val": [], "documents": 1,
    });
    write(&dir.join("manifest.json"), manifest.to_string());
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(stream(&ds), ids);
}
