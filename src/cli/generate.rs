//! `colossus generate CHECKPOINT --prompt TEXT`: stream a continuation from a saved checkpoint.

use std::io::Write;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;

use super::GenerateArgs;
use crate::backend::{self, Job};
use crate::checkpoint;
use crate::data::tokenizer;
use crate::error::{Error, Result};
use crate::generate::{SampleOptions, generate};
use crate::model::Grok;

struct GenerateJob {
    loaded: super::export::LoadedModel,
    prompt: String,
    opts: SampleOptions,
}

impl Job for GenerateJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let model: Grok<B::InnerBackend> = super::export::build(&self.loaded, &device)?;
        let tok = &self.loaded.tokenizer;
        let max_seq_len = self.loaded.model.max_seq_len;
        let mut ids = tokenizer::encode(tok, &self.prompt).map_err(|msg| Error::Flag {
            flag: "--prompt".into(),
            msg,
        })?;
        if ids.is_empty() {
            ids.push(self.loaded.eot); // an empty prompt starts a new document
        }
        // The model has no positions past max_seq_len: the prompt must leave room, and the
        // continuation stops there (said below, rather than ending short without a word).
        let room = max_seq_len.saturating_sub(ids.len());
        if room == 0 {
            return Err(Error::Flag {
                flag: "--prompt".into(),
                msg: format!(
                    "{} tokens fill the model's context of {max_seq_len} (max_seq_len); shorten it",
                    ids.len()
                ),
            });
        }
        let mut opts = self.opts;
        opts.stop = Some(self.loaded.eot);
        let clipped = opts.max_new_tokens > room;
        opts.max_new_tokens = opts.max_new_tokens.min(room);
        let mut stdout = std::io::stdout();
        print!("{}", self.prompt);
        let mut text = Stream::new(tok);
        let start = std::time::Instant::now();
        let new = generate(&model, &ids, &opts, &device, |id| {
            let more = text.push(id);
            if !more.is_empty() {
                print!("{more}");
                let _ = stdout.flush();
            }
        });
        println!("{}", text.rest());
        let dt = start.elapsed().as_secs_f64();
        eprintln!(
            "[{} tokens in {dt:.2}s: {:.1} tokens/s, {}]",
            new.len(),
            new.len() as f64 / dt,
            if opts.no_cache { "no KV cache" } else { "KV cache" }
        );
        if clipped && new.len() == room {
            eprintln!(
                "[stopped at the model's context of {max_seq_len} tokens (max_seq_len), before \
                 --max-new-tokens]"
            );
        }
        Ok(())
    }
}

/// A continuation's text as its tokens arrive. Byte-level BPE tokens need not end on a
/// character boundary: the continuation is decoded whole each time, and what is new is shown once
/// it is final. A character whose bytes are still coming decodes as U+FFFD at the end; showing it
/// then printed "�" for it and, the decoded text no longer extending what was shown, garbled
/// the rest of the line.
struct Stream<'a> {
    tok: &'a tokenizers::Tokenizer,
    ids: Vec<u32>,
    shown: usize,
}

impl<'a> Stream<'a> {
    fn new(tok: &'a tokenizers::Tokenizer) -> Self {
        Stream {
            tok,
            ids: Vec::new(),
            shown: 0,
        }
    }

    /// Take token `id`; the text that is now final and not yet shown.
    fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        self.take(true)
    }

    /// At the end: what is left, a character left unfinished included (as U+FFFD).
    fn rest(&mut self) -> String {
        self.take(false)
    }

    fn take(&mut self, hold_unfinished: bool) -> String {
        let Ok(text) = self.tok.decode(&self.ids, true) else {
            return String::new();
        };
        let end = if hold_unfinished {
            text.trim_end_matches('\u{FFFD}').len()
        } else {
            text.len()
        };
        if end <= self.shown || !text.is_char_boundary(self.shown) {
            return String::new();
        }
        let more = text[self.shown..end].to_string();
        self.shown = end;
        more
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let loaded = super::export::load_any(&args.checkpoint)?;
    let opts = SampleOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: None,
        no_cache: args.no_cache,
    };
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(Error::Flag {
            flag: "--temperature".into(),
            msg: format!(
                "{} must be 0 (greedy) or a positive number",
                crate::say::num(opts.temperature)
            ),
        });
    }
    if !(0.0..=1.0).contains(&opts.top_p) || opts.top_p == 0.0 {
        return Err(Error::Flag {
            flag: "--top-p".into(),
            msg: format!("{} must be in (0, 1]", crate::say::num(opts.top_p)),
        });
    }
    let backend = args.backend.unwrap_or(crate::config::BackendKind::Cpu);
    backend::dispatch(
        backend,
        0,
        GenerateJob {
            loaded,
            prompt: args.prompt,
            opts,
        },
    )
}

/// A checkpoint directory, or a run directory (its `latest` checkpoint).
pub fn resolve_checkpoint(path: &std::path::Path) -> Result<PathBuf> {
    if path.join(checkpoint::WEIGHTS_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    checkpoint::latest(path).ok_or_else(|| {
        Error::input(path, "not a checkpoint directory (no model.safetensors) nor a run directory with a `latest` checkpoint")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shown piece by piece, the text is the whole continuation decoded at once, characters split
    /// over tokens included.
    #[test]
    fn a_stream_shows_characters_split_over_tokens_once_whole() {
        let corpus = vec!["plain ascii words only, nothing else here. ".repeat(20)];
        let tok = tokenizer::train_bpe_on(&corpus, 300).unwrap();
        let text = "naïve café 🦀 ok ✓";
        let ids = tokenizer::encode(&tok, text).unwrap();
        // The BPE saw no such characters: they come as their bytes, one token each.
        assert!(ids.len() > text.chars().count(), "{ids:?}");
        let mut stream = Stream::new(&tok);
        let mut shown = Vec::new();
        for &id in &ids {
            shown.push(stream.push(id));
        }
        shown.push(stream.rest());
        assert_eq!(shown.concat(), text);
        assert!(shown.iter().all(|s| !s.contains('\u{FFFD}')), "{shown:?}");
        // 🦀's four bytes: nothing is shown until the last.
        assert!(
            shown.contains(&" 🦀".to_string()) || shown.contains(&"🦀".to_string()),
            "{shown:?}"
        );

        // Bytes that never make a character are shown as U+FFFD at the end, not dropped.
        let crab = tokenizer::encode(&tok, "🦀").unwrap();
        let mut stream = Stream::new(&tok);
        assert_eq!(stream.push(crab[0]), "");
        assert_eq!(stream.rest(), "\u{FFFD}");
    }
}
