//! RWKV World tokenizer: greedy longest byte match over the vocabulary.

use std::path::Path;

use crate::error::{Error, Result};

/// A vocabulary: token id → bytes. Id 0 is the end-of-text token and has no bytes.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    tokens: Vec<Vec<u8>>,
}

impl Vocab {
    /// Reads `rwkv_vocab_v20230424.txt` (or `.json`), chosen by content.
    pub fn from_file(path: &Path) -> Result<Vocab> {
        Err(Error::format(path, "vocabulary loading not implemented yet"))
    }

    /// Builds a vocabulary from a GGUF's `tokenizer.ggml.tokens` (llama.cpp's rwkv form).
    /// Placeholder until the tokenizer branch lands with the real implementation.
    pub fn from_gguf_tokens(tokens: &[String]) -> Result<Vocab> {
        let _ = tokens;
        Err(Error::invalid("GGUF vocabularies are not supported yet"))
    }

    /// The vocabulary as GGUF `tokenizer.ggml.tokens`. Placeholder (see `from_gguf_tokens`).
    pub fn to_gguf_tokens(&self) -> Vec<String> {
        Vec::new()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
