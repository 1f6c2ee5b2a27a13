//! The tokenizer: over a vocabulary made from the input (all 256 single bytes plus up to 63
//! tokens of 1-8 bytes, read through the JSON vocabulary reader), `decode(encode(text)) == text`
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

/// `{"1": [0], ..., "256": [255], "257": [extra bytes], ...}`.
fn vocab_json(extra: &[&[u8]]) -> String {
    let singles = (0..=255u8).map(|b| vec![b]);
    let entries: Vec<String> = singles
        .chain(extra.iter().map(|t| t.to_vec()))
        .enumerate()
        .map(|(i, bytes)| {
            let list: Vec<String> = bytes.iter().map(u8::to_string).collect();
            format!("\"{}\": [{}]", i + 1, list.join(","))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// Longer texts only repeat what shorter ones exercise, and the plain scan is O(text × tokens).
const MAX_TEXT_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let (extra, text) = split_input(data);
    let text = &text[..text.len().min(MAX_TEXT_BYTES)];
    let json = vocab_json(&extra);
    let vocab =
        Vocab::from_bytes(input_path(), json.as_bytes()).expect("a complete byte vocabulary");
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
