//! The rwkv.cpp `.bin` reader: a file that loads passes the model checks and its header's
//! n_vocab / n_embed / n_layer are the model's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_fuzz::{load_bytes_checked, within_memory_budget};

fn header_i32(data: &[u8], at: usize) -> usize {
    i32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize
}

fuzz_target!(|data: &[u8]| {
    within_memory_budget("rwkvcpp", data.len(), || {
        let Ok(model) = load_bytes_checked(data) else {
            return;
        };
        if model.format == "rwkv.cpp" {
            let d = &model.desc;
            assert_eq!(
                (
                    header_i32(data, 8),
                    header_i32(data, 12),
                    header_i32(data, 16)
                ),
                (d.vocab_size, d.n_embd, d.n_layer)
            );
        }
    });
});
