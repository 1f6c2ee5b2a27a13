//! Bad inputs: every one is a one-line error naming the file, never a panic.

mod formats_util;

use std::path::{Path, PathBuf};

use formats_util::*;
use rwkv_core::formats::zip::ZipWriter;
use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::model::Tensor;
use rwkv_core::Error;

fn load(path: &Path) -> rwkv_core::Result<rwkv_core::Model> {
    formats::load(path, &LoadOptions::default())
}

/// Loads `bytes` from `dir/name` and returns the error text, checking it is one line that
/// names the file.
fn load_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let e = load(&path).err().unwrap_or_else(|| panic!("{name} loaded"));
    let s = e.to_string();
    assert!(
        s.contains(path.to_str().unwrap()),
        "error does not name the file: {s}"
    );
    assert!(!s.contains('\n'), "error is not one line: {s}");
    s
}

fn expect(s: &str, parts: &[&str]) {
    for p in parts {
        assert!(s.contains(p), "expected '{p}' in: {s}");
    }
}

fn written(dir: &Path, format: Format, ext: &str) -> (PathBuf, Vec<u8>) {
    let model = random_model(0xBAD_0001, &small_desc());
    let path = dir.join(format!("good.{ext}"));
    formats::write(&model, &path, format).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn gguf_header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&kvs.to_le_bytes());
    b
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn missing_and_empty_files_and_unknown_magic() {
    let dir = tmpdir("err-basic");
    let missing = dir.join("nope.gguf");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    expect(&e.to_string(), &["nope.gguf"]);
    expect(&load_err(&dir, "empty.st", b""), &["file is empty"]);
    let mut rng = Rng(5);
    let junk = rng.bytes(4096);
    expect(
        &load_err(&dir, "junk.bin", &junk),
        &["unknown model format"],
    );
}

#[test]
fn gguf_header_errors() {
    let dir = tmpdir("err-gguf-header");
    expect(
        &load_err(&dir, "v1.gguf", &gguf_header(1, 0, 0)),
        &["GGUF v1 is not supported"],
    );
    let mut be = b"GGUF".to_vec();
    be.extend_from_slice(&3u32.to_be_bytes());
    be.extend_from_slice(&[0; 16]);
    expect(&load_err(&dir, "be.gguf", &be), &["big-endian"]);
    expect(
        &load_err(&dir, "v9.gguf", &gguf_header(9, 0, 0)),
        &["unsupported GGUF version 9"],
    );
    expect(
        &load_err(&dir, "short.gguf", b"GGUF\x03\0"),
        &["truncated", "version"],
    );
}

#[test]
fn gguf_counts_and_lengths_larger_than_the_file() {
    let dir = tmpdir("err-gguf-counts");
    expect(
        &load_err(&dir, "kv.gguf", &gguf_header(3, 0, 1 << 40)),
        &["metadata count", "larger than the file"],
    );
    expect(
        &load_err(&dir, "t.gguf", &gguf_header(3, 1 << 40, 0)),
        &["tensor count", "larger than the file"],
    );
    // A key whose length runs past the end.
    let mut b = gguf_header(3, 0, 1);
    b.extend_from_slice(&1000u64.to_le_bytes());
    b.extend_from_slice(b"general");
    expect(
        &load_err(&dir, "key.gguf", &b),
        &["truncated", "metadata key"],
    );
    // A string value claiming 2^62 bytes.
    let mut b = gguf_header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(&[b'x'; 32]);
    expect(
        &load_err(&dir, "str.gguf", &b),
        &["truncated", "value of 'k'"],
    );
    // An array claiming 2^60 u32 elements.
    let mut b = gguf_header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'a');
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    expect(
        &load_err(&dir, "arr.gguf", &b),
        &["array 'a' claims 1152921504606846976 elements"],
    );
    // Arrays nested deeper than the limit.
    let mut b = gguf_header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'n');
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..20 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0; 64]);
    expect(&load_err(&dir, "nest.gguf", &b), &["nests arrays deeper"]);
}

#[test]
fn gguf_tensor_info_errors() {
    let dir = tmpdir("err-gguf-tensors");
    let (_, good) = written(&dir, Format::Gguf, "gguf");
    let at = gguf_info_after_name(&good, "output.weight"); // n_dims, dims[2], type, offset
    let (ty_at, off_at) = (at + 4 + 16, at + 4 + 16 + 4);

    let mut b = good.clone();
    put_u32(&mut b, ty_at, 99);
    expect(
        &load_err(&dir, "type.gguf", &b),
        &["tensor 'output.weight' has unknown ggml type 99"],
    );

    let mut b = good.clone();
    put_u32(&mut b, at, 5);
    expect(
        &load_err(&dir, "dims.gguf", &b),
        &["output.weight", "5 dimensions"],
    );

    let mut b = good.clone();
    put_u64(&mut b, off_at, 1 << 40);
    expect(
        &load_err(&dir, "past.gguf", &b),
        &["output.weight", "runs past the end of the file"],
    );

    let mut b = good.clone();
    let off = u64::from_le_bytes(b[off_at..off_at + 8].try_into().unwrap());
    put_u64(&mut b, off_at, off + 4);
    expect(
        &load_err(&dir, "misaligned.gguf", &b),
        &["output.weight", "not a multiple of the alignment 32"],
    );

    // token_embd.weight sits at offset 0 and has the same size.
    let mut b = good.clone();
    put_u64(&mut b, off_at, 0);
    expect(
        &load_err(&dir, "overlap.gguf", &b),
        &["overlap", "output.weight", "token_embd.weight"],
    );

    let mut b = good.clone();
    let second = gguf_info_after_name(&good, "blk.1.attn_norm.weight");
    b[second - "1.attn_norm.weight".len()] = b'0';
    expect(
        &load_err(&dir, "dup.gguf", &b),
        &["tensor 'blk.0.attn_norm.weight' appears twice"],
    );

    // Dimension product overflow: 2^40 × 2^40 rows.
    let mut b = good.clone();
    put_u64(&mut b, at + 4, 1 << 40);
    put_u64(&mut b, at + 12, 1 << 40);
    expect(
        &load_err(&dir, "overflow.gguf", &b),
        &["output.weight", "too large"],
    );

    let e = load_err(&dir, "cut.gguf", &good[..at + 6]);
    expect(&e, &["truncated", "tensor dimension"]);
}

#[test]
fn gguf_metadata_that_disagrees_with_the_tensors() {
    let dir = tmpdir("err-gguf-desc");
    let (_, good) = written(&dir, Format::Gguf, "gguf");
    let key = b"rwkv7.embedding_length";
    let at = find(&good, key) + key.len() + 4;
    let mut b = good.clone();
    put_u32(&mut b, at, 96);
    expect(
        &load_err(&dir, "c.gguf", &b),
        &["rwkv7.embedding_length is 96", "128"],
    );
    let key = b"rwkv7.attention.gate_lora_rank";
    let at = find(&good, key) + key.len() + 4;
    let mut b = good.clone();
    put_u32(&mut b, at, 7);
    expect(
        &load_err(&dir, "g.gguf", &b),
        &["gate_lora_rank is 7", "rank 24"],
    );
    let key = b"general.architecture";
    let at = find(&good, key) + key.len() + 4 + 8;
    let mut b = good.clone();
    b[at..at + 5].copy_from_slice(b"mamba");
    expect(
        &load_err(&dir, "arch.gguf", &b),
        &["architecture 'mamba' is not supported (only rwkv7)"],
    );
}

#[test]
fn shapes_that_disagree_with_the_architecture() {
    let dir = tmpdir("err-shapes");
    let mut model = random_model(0xBAD_0002, &small_desc());
    // ffn.value of block 1 with 255 inputs instead of 256.
    let vals: Vec<f32> = (0..128 * 255).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    model.tensors.insert(
        "blocks.1.ffn.value.weight".into(),
        Tensor::from_f32(vec![128, 255], &vals).unwrap(),
    );
    for (format, ext) in [
        (Format::Safetensors, "st"),
        (Format::Pth, "pth"),
        (Format::Gguf, "gguf"),
    ] {
        let path = dir.join(format!("bad.{ext}"));
        formats::write(&model, &path, format).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, Error::Model { .. }), "{e}");
        expect(
            &e.to_string(),
            &[
                "bad.",
                "'blocks.1.ffn.value.weight' has shape [128, 255]",
                "[128, 256]",
            ],
        );
    }
}

fn st_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0x3cu8, data_len));
    b
}

#[test]
fn safetensors_header_errors() {
    let dir = tmpdir("err-st");
    let t = |dtype: &str, shape: &str, offs: &str| {
        format!(r#"{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offs}}}"#)
    };
    let one = |body: String| format!("{{\"a\":{body}}}");
    expect(
        &load_err(
            &dir,
            "dtype.st",
            &st_file(&one(t("I64", "[2]", "[0,16]")), 16),
        ),
        &["'a'", "dtype I64 is not supported"],
    );
    expect(
        &load_err(
            &dir,
            "past.st",
            &st_file(&one(t("F32", "[4]", "[0,16]")), 8),
        ),
        &["'a'", "outside the 8 data bytes"],
    );
    expect(
        &load_err(
            &dir,
            "count.st",
            &st_file(&one(t("F32", "[5]", "[0,16]")), 16),
        ),
        &["needs 20 bytes", "give 16"],
    );
    let two = format!(
        "{{\"a\":{},\"b\":{}}}",
        t("F32", "[4]", "[0,16]"),
        t("F16", "[4]", "[8,16]")
    );
    expect(
        &load_err(&dir, "overlap.st", &st_file(&two, 16)),
        &["'a' and 'b' overlap"],
    );
    expect(
        &load_err(&dir, "json.st", &st_file("{\"a\": [1, 2", 0)),
        &["not a JSON object"],
    );
    let mut huge = (1u64 << 40).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{\"a\":1}");
    // Too long for the file, so detection already refuses it as unknown.
    expect(&load_err(&dir, "huge.st", &huge), &["unknown model format"]);
    let mut big = (101u64 << 20).to_le_bytes().to_vec();
    big.extend_from_slice(b"{}");
    let e = formats::safetensors::parse_header(Path::new("big.st"), &big)
        .unwrap_err()
        .to_string();
    expect(&e, &["big.st", "exceeds the 104857600-byte limit"]);
    let cut = formats::safetensors::parse_header(
        Path::new("cut.st"),
        &st_file(&one(t("F32", "[4]", "[0,16]")), 16)[..20],
    );
    expect(&cut.unwrap_err().to_string(), &["cut.st", "truncated"]);
}

fn pth_with_pickle(pkl: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut z = ZipWriter::new(&mut out, 0, false);
    z.add("archive/data.pkl", pkl).unwrap();
    for (name, data) in storages {
        z.add(&format!("archive/data/{name}"), data).unwrap();
    }
    z.add("archive/version", b"3\n").unwrap();
    z.finish().unwrap();
    out
}

/// A pickle of {"w": tensor} with the given storage key, numel, shape and stride.
fn tensor_pickle(key: &str, numel: u8, shape: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}(X\x01\0\0\0wctorch._utils\n_rebuild_tensor_v2\n((X\x07\0\0\0storagectorch\nFloatStorage\nX".to_vec();
    p.extend_from_slice(&(key.len() as u32).to_le_bytes());
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(b"X\x03\0\0\0cpuK");
    p.push(numel);
    p.extend_from_slice(b"tQK\0(");
    for &s in shape {
        p.extend_from_slice(&[b'K', s]);
    }
    p.extend_from_slice(b"t(");
    for &s in stride {
        p.extend_from_slice(&[b'K', s]);
    }
    p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

#[test]
fn pth_errors() {
    let dir = tmpdir("err-pth");
    let evil = b"\x80\x02cos\nsystem\nX\x02\0\0\0lsR.";
    let e = load_err(&dir, "evil.pth", &pth_with_pickle(evil, &[]));
    expect(&e, &["evil.pth", "global 'os.system' is not allowed"]);
    let evil4 = b"\x80\x04\x95\x20\0\0\0\0\0\0\0\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94.";
    expect(
        &load_err(&dir, "evil4.pth", &pth_with_pickle(evil4, &[])),
        &["global 'builtins.exec' is not allowed"],
    );

    let storage: Vec<u8> = (0..24u8).collect();
    let ok = tensor_pickle("0", 6, &[2, 3], &[3, 1]);
    let e = load_err(&dir, "missing.pth", &pth_with_pickle(&ok, &[]));
    expect(&e, &["tensor 'w'", "storage '0' is missing"]);
    let strided = tensor_pickle("0", 6, &[2, 3], &[1, 2]);
    let e = load_err(
        &dir,
        "strided.pth",
        &pth_with_pickle(&strided, &[("0", storage.clone())]),
    );
    expect(&e, &["tensor 'w'", "not contiguous"]);
    let big = tensor_pickle("0", 60, &[2, 30], &[30, 1]);
    let e = load_err(
        &dir,
        "bigstorage.pth",
        &pth_with_pickle(&big, &[("0", storage.clone())]),
    );
    expect(&e, &["storage '0' claims 240 bytes", "has 24"]);
    let outside = tensor_pickle("0", 6, &[2, 4], &[4, 1]);
    let e = load_err(
        &dir,
        "outside.pth",
        &pth_with_pickle(&outside, &[("0", storage.clone())]),
    );
    expect(&e, &["lies outside its storage of 6"]);
    // Well-formed but not an RWKV model.
    let e = load_err(
        &dir,
        "notrwkv.pth",
        &pth_with_pickle(&ok, &[("0", storage)]),
    );
    expect(&e, &["no RWKV tensors found"]);

    // A compressed entry in an otherwise valid checkpoint.
    let (_, good) = written(&dir, Format::Pth, "pth");
    let mut b = good.clone();
    let cd = b.len() - 22 - {
        let n = u32::from_le_bytes(b[b.len() - 10..b.len() - 6].try_into().unwrap());
        n as usize
    };
    assert_eq!(&b[cd..cd + 4], b"PK\x01\x02");
    b[cd + 10] = 8;
    expect(
        &load_err(&dir, "deflated.pth", &b),
        &["archive/data.pkl", "is compressed (method 8)"],
    );
    let e = load_err(&dir, "cut.pth", &good[..good.len() / 2]);
    expect(&e, &["no end-of-central-directory"]);
}

#[test]
fn rwkvcpp_errors_and_a_crafted_file_that_loads() {
    let dir = tmpdir("err-rwkvcpp");
    let model = random_model(0xBAD_0003, &tiny_desc());
    let good = rwkvcpp_bytes(&model);
    let path = dir.join("good.bin");
    std::fs::write(&path, &good).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.desc, model.desc);
    assert_same_tensors(&model, &back);

    let first_type = 24 + 8; // header, then n_dims and key_len of the first record
    let mut b = good.clone();
    put_u32(&mut b, first_type, 5);
    expect(
        &load_err(&dir, "type.bin", &b),
        &[
            "'emb.weight'",
            "unknown or unsupported rwkv.cpp type Q4_2 (removed)",
        ],
    );
    let mut b = good.clone();
    put_u32(&mut b, 24, 9);
    expect(&load_err(&dir, "dims.bin", &b), &["9 dimensions"]);
    let mut b = good.clone();
    put_u32(&mut b, 28, 0x7fff_0000);
    expect(
        &load_err(&dir, "key.bin", &b),
        &["name length 2147418112", "out of range"],
    );
    let mut b = good.clone();
    put_u32(&mut b, 16, 3); // n_layer in the header
    expect(
        &load_err(&dir, "layers.bin", &b),
        &["header says n_layer 3, the tensors say 2"],
    );
    let mut b = good.clone();
    put_u32(&mut b, 4, 7);
    expect(
        &load_err(&dir, "version.bin", &b),
        &["unsupported rwkv.cpp file version 7"],
    );
    let e = load_err(&dir, "cut.bin", &good[..good.len() - 3]);
    expect(&e, &["truncated", "data of tensor 'head.weight'"]);
}

/// Truncating a valid file anywhere gives an error, never a panic or a model.
#[test]
fn truncated_files_always_fail_cleanly() {
    let dir = tmpdir("truncations");
    let model = random_model(0xBAD_0004, &tiny_desc());
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (format, ext) in [
        (Format::Gguf, "gguf"),
        (Format::Safetensors, "st"),
        (Format::Pth, "pth"),
    ] {
        let path = dir.join(format!("full.{ext}"));
        formats::write(&model, &path, format).unwrap();
        files.push((ext.to_string(), std::fs::read(&path).unwrap()));
    }
    files.push(("bin".into(), rwkvcpp_bytes(&model)));
    let mut tried = 0;
    for (ext, bytes) in &files {
        let full = dir.join(format!("ok.{ext}"));
        std::fs::write(&full, bytes).unwrap();
        assert!(load(&full).is_ok(), "{ext} full file must load");
        let n = bytes.len();
        // Dense over the headers (every 3rd length up to 900 bytes), ~60 lengths spread over
        // the data, then each of the last 24 bytes. (Each try writes a file: ~4 ms.)
        let lens = (0..n.min(900))
            .step_by(3)
            .chain((900..n).step_by(n / 60))
            .chain(n.saturating_sub(24)..n);
        let path = dir.join(format!("cut.{ext}"));
        for len in lens {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(
                load(&path).is_err(),
                "{ext} truncated to {len} of {n} loaded"
            );
            tried += 1;
        }
    }
    assert!(tried > 1000, "{tried}");
}
