//! Inputs the fuzzers (fuzz/, scripts/fuzz.sh) or their review found that broke a reader: each
//! must now give a typed error, quickly and without runaway memory. Each test says what it
//! found and where it was fixed.

#[path = "formats_util/alloc_meter.rs"]
mod alloc_meter;
mod formats_util;

use std::path::Path;

use formats_util::gguf_build::{kv, string_bytes, ty, GgufSpec, TensorSpec};
use rwkv_core::formats::zip::{self, ZipWriter};
use rwkv_core::formats::{self, LoadOptions};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::Error;

fn load(bytes: Vec<u8>) -> rwkv_core::Result<rwkv_core::Model> {
    formats::load_bytes(bytes, "regression", &LoadOptions::default())
}

fn assert_typed(r: rwkv_core::Result<impl std::fmt::Debug>, needle: &str) {
    match r {
        Err(e @ (Error::Format { .. } | Error::Model { .. })) => {
            let s = e.to_string();
            assert!(s.contains(needle), "{s} (wanted '{needle}')");
        }
        other => panic!("expected a format or model error, got {other:?}"),
    }
}

/// Found by the `vocab` fuzzer: a vocabulary's id table had a slot for every id up to the
/// largest, so one line naming a large id (here in a 3 KB file) allocated megabytes — 48 MB for
/// id 2,000,000. Fixed in `Vocab::from_entries`: ids must be nearly consecutive.
#[test]
fn vocabulary_with_one_far_id_is_refused_without_allocating_its_gap() {
    let mut txt = String::new();
    for b in 0..=255u32 {
        txt.push_str(&format!("{} b'\\x{b:02x}' 1\n", b + 1));
    }
    txt.push_str("2000000 'far' 3\n");
    let (result, held) =
        alloc_meter::held_during(|| Vocab::from_bytes(Path::new("v.txt"), txt.as_bytes()));
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("token id 2000000 is far beyond the 257 tokens"),
        "{e}"
    );
    assert!(held < 1 << 20, "held {held} bytes");
    // Ids a little past the count (gaps real files never have, but harmless) still load.
    let near = txt.replace("2000000 'far' 3", "700 'far' 3");
    let v = Vocab::from_bytes(Path::new("v.txt"), near.as_bytes()).unwrap();
    assert_eq!(v.token_bytes(700), Some(&b"far"[..]));
}

/// A one-entry zip whose central directory entry carries zip64 sizes of `size`.
fn zip_with_zip64_size(size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut z = ZipWriter::new(&mut out, 0, true);
    z.add("archive/data.pkl", b"\x80\x02}.").unwrap();
    z.finish().unwrap();
    // The central record's zip64 extra: id 1, 24 bytes (size, compressed size, local offset).
    let cd = out.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let extra = cd
        + out[cd..]
            .windows(4)
            .position(|w| w == [1, 0, 24, 0])
            .unwrap()
        + 4;
    out[extra..extra + 8].copy_from_slice(&size.to_le_bytes());
    out[extra + 8..extra + 16].copy_from_slice(&size.to_le_bytes());
    out
}

/// Review of the zip reader's fuzz target: a zip64 entry size near 2^64 overflowed the
/// entry's end offset (a panic with overflow checks, a wrapped range without). Fixed in
/// `zip::read_central_entry` with checked arithmetic.
#[test]
fn zip64_entry_size_near_u64_max_is_refused() {
    let bytes = zip_with_zip64_size(u64::MAX - 8);
    assert_typed(zip::read_index(Path::new("z"), &bytes), "runs past");
    assert_typed(load(bytes), "runs past");
    // The untouched archive reads.
    let honest = zip_with_zip64_size(4);
    assert_eq!(
        zip::read_index(Path::new("z"), &honest)
            .unwrap()
            .entries
            .len(),
        1
    );
}

/// An rwkv7 GGUF whose second tensor is `name` with ggml dims `dims` (f32, no data: a zero
/// dimension makes it 0 bytes).
fn rwkv7_gguf_with(name: &str, dims: Vec<u64>) -> Vec<u8> {
    let u32kv = |k: &str, v: u32| kv(k, ty::U32, v.to_le_bytes().to_vec());
    let tensor = |name: &str, dims: Vec<u64>, offset: u64, data: Vec<u8>| TensorSpec {
        name: name.as_bytes().to_vec(),
        name_len: None,
        n_dims: None,
        dims,
        ggml_type: 0,
        offset,
        data,
    };
    GgufSpec {
        magic: *b"GGUF",
        version: 3,
        n_tensors: None,
        n_kv: None,
        kvs: vec![
            kv("general.architecture", ty::STRING, string_bytes(b"rwkv7")),
            u32kv("rwkv7.embedding_length", 16),
            u32kv("rwkv7.block_count", 1),
            u32kv("rwkv7.feed_forward_length", 32),
            u32kv("rwkv7.wkv.head_size", 16),
        ],
        tensors: vec![
            tensor("token_embd.weight", vec![16, 8], 0, vec![0x3c; 16 * 8 * 4]),
            tensor(name, dims, 16 * 8 * 4, Vec::new()),
        ],
        alignment: 32,
    }
    .build()
}

/// Review of the GGUF target's model path: a tensor with a zero dimension holds 0 bytes, so
/// its other dimensions may be anything the container's checked byte count allows; squeezing
/// a vector tensor or splitting the fused mixes then multiplied them unchecked (overflow). Fixed
/// in `gguf::names` and `canonical::split_fused_mixes` with checked products.
#[test]
fn gguf_zero_sized_tensor_with_huge_dims_is_refused() {
    let huge = vec![1, 0, 1 << 32, 1 << 32];
    for name in [
        "blk.0.time_mix_w0.weight",
        "blk.0.time_mix_lerp_fused.weight",
    ] {
        assert_typed(load(rwkv7_gguf_with(name, huge.clone())), name);
    }
    // The same file with an honest (but wrong-sized) vector still fails as a model, not a panic.
    assert_typed(
        load(rwkv7_gguf_with("blk.0.time_mix_w0.weight", vec![16])),
        "runs past the end",
    );
}

/// A safetensors file of `header` (JSON) and `data_len` data bytes.
fn safetensors(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0x3c);
    b
}

/// Review of the safetensors target: `blocks.0.att.r_k` of shape [0, 2^32, 2^32] has 0 bytes,
/// and reading the head size from it multiplied 2^32 · 2^32 (overflow); vectors of such shapes
/// were squeezed with an unchecked product too. Fixed in `canonical::infer_desc` and
/// `canonical::squeeze`.
#[test]
fn safetensors_zero_sized_tensor_with_huge_dims_is_refused() {
    let emb = r#""emb.weight": {"dtype": "F32", "shape": [8, 16], "data_offsets": [0, 512]}"#;
    let r_k = r#""blocks.0.att.r_k": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [512, 512]}"#;
    assert_typed(
        load(safetensors(&format!("{{{emb}, {r_k}}}"), 512)),
        "blocks.0.att.r_k",
    );
}

/// A `.pth` archive of one pickle (no storages).
fn pth_with(pkl: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut z = ZipWriter::new(&mut out, 0, false);
    z.add("archive/data.pkl", pkl).unwrap();
    z.add("archive/byteorder", b"little").unwrap();
    z.finish().unwrap();
    out
}

/// Review of the pickle target's memory budget: the unpickler copies a list or dict shared
/// with the memo before appending to it, and each copy stays alive on the stack; a fixed cap
/// of 2^26 copied elements let a 30 KB pickle (10,000 items memoized, then 5,000 times "get it,
/// append one") hold ~800 MB. Fixed in `pickle::Machine`: copying is budgeted per byte of the
/// pickle.
#[test]
fn pickle_copy_amplification_is_bounded_by_the_pickle_size() {
    let items = 10_000;
    let mut pkl = b"\x80\x02]q\x00(".to_vec();
    pkl.extend(std::iter::repeat_n(b'N', items));
    pkl.extend_from_slice(b"eq\x01");
    for _ in 0..5_000 {
        pkl.extend_from_slice(b"h\x01Na");
    }
    pkl.push(b'.');
    let file = pth_with(&pkl);
    let len = file.len();
    let (result, held) = alloc_meter::held_during(|| load(file));
    // The unpickler's own cost (a ~150-byte node per 1-byte opcode) stays within the fuzz
    // targets' budget of 256 bytes per input byte; before the fix this held 803 MB.
    assert!(held < 256 * len, "a {len}-byte file held {held} bytes");
    assert_typed(result, "too much copying");
}

/// Found while writing the GGUF seed corpus: a model with the 256-id byte-level vocabulary
/// (id = byte, what rwkv.cpp's tiny test models use) was written to GGUF with token 0 (byte
/// 0x00) replaced by the end-of-text marker, so the file could not be read back. Fixed in
/// `gguf::writer`: such a vocabulary is refused when writing.
#[test]
fn gguf_writer_refuses_a_vocabulary_whose_id_0_is_a_byte() {
    let dir = formats_util::tmpdir("regress-vocab0");
    let mut model = formats_util::random_model(0x0516, &formats_util::tiny_desc());
    model.vocab = Some(Vocab::byte_level(256));
    let path = dir.join("m.gguf");
    let e = formats::write(&model, &path, formats::Format::Gguf).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("id 0 is the token [0]"), "{e}");
    assert!(!path.exists());
    // World ids (byte + 1) round-trip.
    model.vocab = Some(Vocab::byte_level(257));
    formats::write(&model, &path, formats::Format::Gguf).unwrap();
    let back = formats::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(back.vocab, model.vocab);
}
