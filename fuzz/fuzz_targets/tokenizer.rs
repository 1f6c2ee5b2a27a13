//! The tokenizer: over a vocabulary made from the input (all 256 single bytes plus up to 63
//! tokens of 1-8 bytes, read through the World text vocabulary reader), `decode(encode(text)) == text`
//! and every token `encode` picks is the longest vocabulary entry at its position (checked
//! against a plain scan of the vocabulary).
//!
//! Input: one byte n (tokens: n % 64), then per token a length byte (len % 8 + 1) and its
//! bytes, then the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_core::tokenizer::Vocab;
use rwkv_fuzz::{input_path, within_memory_budget};

/// The extra tokens and the text of `data`.
fn split_input(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&n, mut rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut tokens = Vec::new();
    for _ in 0..n % 64 {
        let Some((&len, after)) = rest.split_first() else {
            break;
        };
        let len = (len % 8 + 1) as usize;
        if after.len() < len {
            break;
        }
        tokens.push(&after[..len]);
        rest = &after[len..];
    }
    (tokens, rest)
}

/// The World text format: `1 b'\x00' 1`, ..., `256 b'\xff' 1`, then `257 b'...' N` per extra
/// token (every byte escaped, so any bytes make a valid line).
fn vocab_txt(extra: &[&[u8]]) -> String {
    let singles = (0..=255u8).map(|b| vec![b]);
    let mut out = String::new();
    for (i, bytes) in singles.chain(extra.iter().map(|t| t.to_vec())).enumerate() {
        let escaped: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        out.push_str(&format!("{} b'{escaped}' {}\n", i + 1, bytes.len()));
    }
    out
}

/// Longer texts only repeat what shorter ones exercise, and the plain scan is O(text × tokens).
const MAX_TEXT_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let (extra, text) = split_input(data);
    let text = &text[..text.len().min(MAX_TEXT_BYTES)];
    let txt = vocab_txt(&extra);
    let vocab =
        Vocab::from_bytes(input_path(), txt.as_bytes()).expect("a complete byte vocabulary");
    let ids = within_memory_budget("tokenizer", text.len(), || vocab.encode(text));
    assert_eq!(vocab.decode(&ids).expect("encoded ids decode"), text);
    let mut pos = 0;
    for &id in &ids {
        let token = vocab.token_bytes(id).expect("encode gives known ids");
        assert!(text[pos..].starts_with(token));
        let longest = extra
            .iter()
            .filter(|t| text[pos..].starts_with(t))
            .map(|t| t.len())
            .max()
            .unwrap_or(1);
        assert_eq!(token.len(), longest, "at byte {pos} encode took {token:?}");
        pos += token.len();
    }
    assert_eq!(pos, text.len());
});
