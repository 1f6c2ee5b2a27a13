//! The safetensors reader: the header's entries lie inside the data section, hold exactly
//! dtype × shape bytes and never overlap; the model loaded from memory and streamed agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_core::formats::safetensors::parse_header;
use rwkv_fuzz::{input_path, load_both_ways, within_memory_budget};

fn check_header(data: &[u8]) {
    let Ok(entries) = parse_header(input_path(), data) else {
        return;
    };
    let header_end = 8 + u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let mut spans = Vec::new();
    for e in &entries {
        assert!(
            header_end <= e.range.start
                && e.range.start <= e.range.end
                && e.range.end <= data.len(),
            "tensor '{}' range {:?} outside the data {header_end}..{}",
            e.name,
            e.range,
            data.len()
        );
        // A scalar (shape []) is one element.
        let want = if e.shape.is_empty() {
            Some(e.dtype.block_bytes())
        } else {
            e.dtype.tensor_bytes(&e.shape)
        };
        assert_eq!(
            want,
            Some(e.range.len()),
            "tensor '{}' {} {:?}",
            e.name,
            e.dtype,
            e.shape
        );
        spans.push(e.range.clone());
    }
    spans.sort_by_key(|r| (r.start, r.end));
    for w in spans.windows(2) {
        assert!(w[1].start >= w[0].end, "tensor ranges {w:?} overlap");
    }
}

fuzz_target!(|data: &[u8]| {
    within_memory_budget("safetensors", data.len(), || {
        check_header(data);
        load_both_ways(data);
    });
});
