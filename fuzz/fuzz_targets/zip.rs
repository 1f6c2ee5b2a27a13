//! The zip container of `.pth` files: every entry's data lies inside the archive, names are
//! unique, entries never overlap; a whole `.pth` loaded from these bytes passes the model checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_core::formats::zip::read_index;
use rwkv_fuzz::{input_path, load_bytes_checked, within_memory_budget};

fn check_index(data: &[u8]) {
    let Ok(index) = read_index(input_path(), data) else {
        return;
    };
    let mut spans = Vec::new();
    for e in &index.entries {
        assert!(
            e.data.start <= e.data.end && e.data.end <= data.len(),
            "entry '{}' data {:?} outside the {}-byte archive",
            e.name,
            e.data,
            data.len()
        );
        assert_eq!(index.get(&e.name), Some(e), "entry names must be unique");
        spans.push(e.data.clone());
    }
    spans.sort_by_key(|r| (r.start, r.end));
    for w in spans.windows(2) {
        assert!(w[1].start >= w[0].end, "entry data {w:?} overlap");
    }
}

fuzz_target!(|data: &[u8]| {
    within_memory_budget("zip", data.len(), || {
        check_index(data);
        let _ = load_bytes_checked(data);
    });
});
