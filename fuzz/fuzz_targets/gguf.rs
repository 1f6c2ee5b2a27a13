//! The GGUF reader: the container parsed from a byte source (every tensor's window inside the
//! file, aligned, sized by its type and dims, none overlapping; every value printable as
//! `rwkv info` prints it), and the whole model loaded from memory and streamed, which must agree.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rwkv_core::formats::gguf::{tensor_type_counts, GgufFile};
use rwkv_core::model::ByteSource;
use rwkv_fuzz::{input_path, load_both_ways, within_memory_budget, MemSource};

fn check_container(data: &[u8]) {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource(data.to_vec()));
    let Ok(g) = GgufFile::open_source(input_path(), src) else {
        return;
    };
    let file_len = data.len() as u64;
    assert!(g.alignment.is_power_of_two());
    assert!(g.data_start % g.alignment == 0);
    let mut spans = Vec::new();
    for t in &g.tensors {
        assert!(t.offset % g.alignment == 0, "tensor '{}' unaligned", t.name);
        let start = g.data_start + t.offset;
        let end = start.checked_add(t.n_bytes).expect("end overflows");
        assert!(
            end <= file_len,
            "tensor '{}' ends at {end} past {file_len}",
            t.name
        );
        if let Some(dtype) = t.dtype {
            assert_eq!(dtype.ggml_id(), t.ggml_type);
            assert_eq!(
                dtype.tensor_bytes(&t.shape()).map(|b| b as u64),
                Some(t.n_bytes),
                "tensor '{}' dims {:?} of {dtype}",
                t.name,
                t.dims
            );
        }
        assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
        spans.push((start, end));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "tensor windows {w:?} overlap");
    }
    assert_eq!(
        tensor_type_counts(&g).values().sum::<usize>(),
        g.tensors.len()
    );
    for (key, value) in &g.kv {
        let shown = format!("{key} = {value}");
        assert!(!shown.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    within_memory_budget("gguf", data.len(), || {
        check_container(data);
        load_both_ways(data);
    });
});
