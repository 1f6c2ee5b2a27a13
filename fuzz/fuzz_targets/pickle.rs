//! The restricted unpickler of `.pth` files. The input is `data.pkl`; the target wraps it in a
//! torch.save-style archive whose storages `archive/data/0` ... hold enough bytes for the seed
//! models' tensors, so a pickle that names them loads all the way to a model (which must pass
//! the model checks), and any other pickle must fail with an error.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rwkv_core::formats::zip::ZipWriter;
use rwkv_fuzz::{load_bytes_checked, within_memory_budget};

/// Storages in the archive: more than the seed models' tensors (two layers, official names).
const STORAGES: usize = 96;
/// Bytes per storage: the seed models' largest tensor (ffn.key, 32 × 16 f16 values) is 1 KiB.
const STORAGE_BYTES: usize = 1024;

/// The archive's entries after data.pkl, built once.
fn storages() -> &'static [(String, Vec<u8>)] {
    static ENTRIES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..STORAGES)
            .map(|i| {
                let bytes = (0..STORAGE_BYTES)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 56) as u8
                    })
                    .collect();
                (format!("archive/data/{i}"), bytes)
            })
            .collect()
    })
}

fn archive(pkl: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut z = ZipWriter::new(&mut out, 0, false);
    z.add("archive/data.pkl", pkl).expect("writing to memory");
    z.add("archive/byteorder", b"little")
        .expect("writing to memory");
    for (name, bytes) in storages() {
        z.add(name, bytes).expect("writing to memory");
    }
    z.add("archive/version", b"3\n").expect("writing to memory");
    z.finish().expect("writing to memory");
    out
}

fuzz_target!(|data: &[u8]| {
    let file = archive(data);
    // The budget is the pickle's: the storages are the harness's, and the reader maps them.
    within_memory_budget("pickle", data.len(), || {
        let _ = load_bytes_checked(&file);
    });
});
