//! The World vocabulary reader (`.txt` and `.json`): a vocabulary that loads covers every
//! single byte, survives the trip through llama.cpp's GGUF token strings unchanged, and
//! encodes then decodes any text (here: the file itself) back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_core::tokenizer::Vocab;
use rwkv_fuzz::{input_path, within_memory_budget};

fuzz_target!(|data: &[u8]| {
    within_memory_budget("vocab", data.len(), || {
        let Ok(vocab) = Vocab::from_bytes(input_path(), data) else {
            return;
        };
        for b in 0..=255u8 {
            let ids = vocab.encode(&[b]);
            assert_eq!(ids.len(), 1, "byte {b:#04x} is not one token");
            assert_eq!(vocab.token_bytes(ids[0]), Some(&[b][..]));
        }
        let tokens = vocab.to_gguf_tokens();
        let back = Vocab::from_gguf_tokens(&tokens).expect("our own GGUF tokens read back");
        assert_eq!(back, vocab, "GGUF token strings changed the vocabulary");
        let ids = vocab.encode(data);
        assert_eq!(vocab.decode(&ids).expect("encoded ids decode"), data);
    });
});
