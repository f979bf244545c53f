//! Tokenizers: a byte-level BPE trained on the corpus with Hugging Face `tokenizers`, or a given
//! tokenizer.json. Special ids follow Grok-1: 0 pad, 1 beginning of text, 2 end of text.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::{Error, Result};

pub const PAD: &str = "<|pad|>";
pub const BOS: &str = "<|bos|>";
pub const EOT: &str = "<|endoftext|>";

/// Byte-level BPE needs its 256 byte symbols plus our three specials.
pub const MIN_VOCAB: usize = 256 + 3;
/// The largest BPE `prepare` trains: the `tokenizers` trainer reserves tables for every entry
/// up front, so `--vocab-size 4294967296` asked for 283 GB and aborted the process. 2^22 entries
/// is ~16× the largest vocabularies in use; a bigger one comes as a trained tokenizer.json.
pub const MAX_BPE_VOCAB: usize = 1 << 22;

/// Train a byte-level BPE of exactly `vocab_size` entries (specials first, so they get ids 0–2)
/// on whole text files. Deterministic for a given corpus: the same files give the same
/// tokenizer.json.
pub fn train_bpe(files: &[PathBuf], vocab_size: usize) -> Result<Tokenizer> {
    let (mut trainer, mut tokenizer) = bpe_parts(vocab_size)?;
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    tokenizer
        .train_from_files(&mut trainer, names)
        .map_err(|e| Error::Train(format!("training the BPE tokenizer: {e}")))?;
    Ok(Tokenizer::from(tokenizer))
}

/// As `train_bpe`, on texts already read (documents or pieces of them). Each is fed line by line,
/// as `train_bpe` feeds files, so the same text gives the same tokenizer either way.
pub fn train_bpe_on(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let (mut trainer, mut tokenizer) = bpe_parts(vocab_size)?;
    tokenizer
        .train(&mut trainer, texts.iter().flat_map(|t| t.split_inclusive('\n')))
        .map_err(|e| Error::Train(format!("training the BPE tokenizer: {e}")))?;
    Ok(Tokenizer::from(tokenizer))
}

type BpeTokenizer = tokenizers::TokenizerImpl<
    BPE,
    tokenizers::NormalizerWrapper,
    ByteLevel,
    tokenizers::PostProcessorWrapper,
    ByteLevel,
>;

/// Why a byte-level BPE of `vocab_size` entries cannot be trained, if it cannot. The callers
/// that know where the size came from check first and name it (`model.vocab_size` of a config
/// file, `prepare --vocab-size`).
pub fn check_bpe_size(vocab_size: usize) -> std::result::Result<(), String> {
    if vocab_size < MIN_VOCAB {
        return Err(format!(
            "{vocab_size} is too small to train a byte-level BPE; expected at least {MIN_VOCAB} \
             (256 bytes and 3 special tokens)"
        ));
    }
    if vocab_size > MAX_BPE_VOCAB {
        return Err(format!(
            "{vocab_size} is more than the {MAX_BPE_VOCAB} entries a BPE is trained to here (its \
             trainer reserves memory for every entry); give a trained tokenizer.json for a larger \
             vocabulary"
        ));
    }
    Ok(())
}

fn bpe_parts(vocab_size: usize) -> Result<(tokenizers::models::bpe::BpeTrainer, BpeTokenizer)> {
    check_bpe_size(vocab_size)
        .map_err(|why| Error::Train(format!("training the BPE tokenizer: vocab_size {why}")))?;
    let trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from(PAD, true),
            AddedToken::from(BOS, true),
            AddedToken::from(EOT, true),
        ])
        .build();
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(byte_level))
        .build()
        .map_err(|e| Error::Train(format!("building the tokenizer: {e}")))?;
    Ok((trainer, tokenizer))
}

/// Load a tokenizer.json and check that it fits a model of `vocab_size` entries; `bound` names
/// where that size came from (a config key and its file, a flag, a manifest), for the error.
/// Its end-of-text token is checked apart, by `eot_id`, against the name a config gives.
///
/// A tokenizer.json saved from an inference pipeline may carry `truncation` or `padding`: they
/// shape one model input, and applied to the corpus they cut each 4 MiB piece to `max_length`
/// tokens or pad each short document with pad ids, silently (found 2026-12-06: the Sonnets
/// prepared to 17 tokens). Both are switched off here; the file itself is kept as given.
pub fn load(path: &Path, vocab_size: usize, bound: &str) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| Error::input(path, format!("not a readable tokenizer.json: {e}")))?;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::input(path, format!("cannot switch off its truncation: {e}")))?;
    let n = tok.get_vocab_size(true);
    if n > vocab_size {
        return Err(Error::input(
            path,
            format!("tokenizer has {n} entries, more than the {vocab_size} that {bound} allows"),
        ));
    }
    Ok(tok)
}

/// The id of `name`, the end-of-text token placed between documents and where generation
/// stops, in `tok` (loaded from `path`); `key` says where the name came from, for the error.
pub fn eot_id(tok: &Tokenizer, path: &Path, name: &str, key: &str) -> Result<u32> {
    tok.token_to_id(name).ok_or_else(|| {
        Error::input(
            path,
            format!(
                "tokenizer has no end-of-text token `{name}` ({key}); set it to the token this \
                 tokenizer ends documents with (`</s>`, `<|end_of_text|>`, ...)"
            ),
        )
    })
}

/// Encode text to ids (no special tokens added). A given tokenizer may fail on text it has no
/// token for (a word-level vocabulary without an unknown token): the error says why, for the
/// caller to name the tokenizer, file or flag at fault.
pub fn encode(tok: &Tokenizer, text: &str) -> std::result::Result<Vec<u32>, String> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| format!("cannot encode the text: {e}"))
}

/// Save as tokenizer.json.
pub fn save(tok: &Tokenizer, path: &Path) -> Result<()> {
    tok.save(path, false).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
