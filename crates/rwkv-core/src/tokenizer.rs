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

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
