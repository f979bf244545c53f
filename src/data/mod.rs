//! Text in, token batches out: corpus files, tokenizers, and batch sampling.

pub mod corpus;
pub mod tokenizer;
pub mod windows;

use std::path::PathBuf;

use tokenizers::Tokenizer;

pub use windows::{Batch, BatchSource, RandomWindows};

use crate::config::Config;
use crate::error::Result;

/// The corpus tokenized into one stream, documents separated by the end-of-text id.
pub struct Corpus {
    pub tokenizer: Tokenizer,
    pub tokens: Vec<u32>,
    pub files: Vec<PathBuf>,
    pub bytes: usize,
}

/// Tokenize the configured corpus with the configured tokenizer (or one trained on the corpus).
pub fn load_corpus(cfg: &Config) -> Result<Corpus> {
    load_corpus_with(cfg, None)
}

/// As `load_corpus`, but with `given` (a resumed run's own tokenizer) when there is one.
pub fn load_corpus_with(cfg: &Config, given: Option<Tokenizer>) -> Result<Corpus> {
    let files = corpus::list_files(&cfg.data.corpus, "data.corpus")?;
    let docs: Vec<String> = files
        .iter()
        .map(|f| corpus::read_document(f))
        .collect::<Result<_>>()?;
    let bytes = docs.iter().map(String::len).sum();
    let tokenizer = match (given, &cfg.data.tokenizer) {
        (Some(tok), _) => tok,
        (None, Some(path)) => tokenizer::load(path.as_ref(), cfg.model.vocab_size)?,
        (None, None) => tokenizer::train_bpe(&files, cfg.model.vocab_size)?,
    };
    let eot = tokenizer::eot_id(&tokenizer);
    let mut tokens = Vec::new();
    for doc in &docs {
        tokens.extend(tokenizer::encode(&tokenizer, doc)?);
        tokens.push(eot);
    }
    Ok(Corpus {
        tokenizer,
        tokens,
        files,
        bytes,
    })
}
