//! The GGUF container reader on real files from ../shared/refdata (skipped when absent).

mod formats_util;

use formats_util::*;
use rwkv_core::dtype::DType;
use rwkv_core::formats::gguf::{GgufArray, GgufFile, GgufValue};
use rwkv_core::formats::{self, LoadOptions};

#[test]
fn ollama_tiny_llama_container() {
    let Some(path) = shared("refdata/ollama/llama-2-tiny-random.gguf") else {
        return;
    };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.kv.len(), 18);
    assert_eq!(g.tensors.len(), 12);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.data_start, 724416);
    assert_eq!(
        g.get("general.architecture").and_then(GgufValue::as_str),
        Some("llama")
    );
    let f16 = g
        .tensors
        .iter()
        .filter(|t| t.dtype == Some(DType::F16))
        .count();
    let f32 = g
        .tensors
        .iter()
        .filter(|t| t.dtype == Some(DType::F32))
        .count();
    assert_eq!(f16 + f32, 12);
    assert!(f16 > 0 && f32 > 0);
    // The tensors tile the data section up to the end of the file (with alignment padding).
    let end = g
        .tensors
        .iter()
        .map(|t| g.data_start + t.offset + t.n_bytes)
        .max()
        .unwrap();
    assert!(end <= g.file_len() && g.file_len() - end < 32);
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.shape(), vec![32000, 8]);
    assert_eq!(g.tensor_data(emb).as_slice().len() as u64, emb.n_bytes);
    let e = formats::load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("architecture 'llama' is not supported (only rwkv7)")
            && e.contains("llama-2-tiny"),
        "{e}"
    );
}

#[test]
fn llama_cpp_vocab_only_file_with_arrays() {
    let Some(path) = shared("refdata/llama.cpp/models/ggml-vocab-llama-spm.gguf") else {
        return;
    };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.tensors.len(), 0);
    assert_eq!(g.kv.len(), 22);
    let Some(GgufValue::Array(GgufArray::Str(tokens))) = g.get("tokenizer.ggml.tokens") else {
        panic!("tokens missing")
    };
    assert_eq!(tokens.len(), 32000);
    assert_eq!(tokens[1], "<s>");
    assert!(
        matches!(g.get("tokenizer.ggml.scores"), Some(GgufValue::Array(GgufArray::F32(v))) if v.len() == 32000)
    );
    assert!(
        matches!(g.get("tokenizer.ggml.token_type"), Some(GgufValue::Array(GgufArray::I32(v))) if v.len() == 32000)
    );
    let shown = g.get("tokenizer.ggml.tokens").unwrap().to_string();
    assert!(
        shown.starts_with("[string; 32000] [\"<unk>\", \"<s>\""),
        "{shown}"
    );
}

#[test]
fn kquant_vectors_gguf_tensors_match_the_raw_block_files() {
    let Some(path) = shared("refdata/gguf-py-kquant-vectors/kquant-dequant-vectors.gguf") else {
        return;
    };
    let dir = path.parent().unwrap();
    let g = GgufFile::open(&path).unwrap();
    let cases = [
        ("q4_k_4x512", DType::Q4K),
        ("q5_k_2x512", DType::Q5K),
        ("q6_k_4x512", DType::Q6K),
        ("q8_0_4x128", DType::Q8_0),
        ("q4_0_2x128", DType::Q4_0),
        ("q4_1_2x128", DType::Q4_1),
        ("q5_0_2x128", DType::Q5_0),
        ("q5_1_2x128", DType::Q5_1),
    ];
    let mut seen = 0;
    for (stem, dtype) in cases {
        let ty = stem.split('_').take(2).collect::<Vec<_>>().join("_");
        let (rows, cols) = stem.rsplit('_').next().unwrap().split_once('x').unwrap();
        let (rows, cols): (usize, usize) = (rows.parse().unwrap(), cols.parse().unwrap());
        let Some(q) = g.tensor(&format!("{ty}.q")) else {
            panic!("{ty}.q missing")
        };
        assert_eq!(q.dtype, Some(dtype), "{ty}");
        assert_eq!(q.shape(), vec![rows, cols]);
        let blocks = std::fs::read(dir.join(format!("{stem}.blocks.bin"))).unwrap();
        assert_eq!(g.tensor_data(q).as_slice(), &blocks[..], "{ty}");
        let f = g.tensor(&format!("{ty}.expected_f32")).unwrap();
        let expected = std::fs::read(dir.join(format!("{stem}.expected_f32.bin"))).unwrap();
        assert_eq!(g.tensor_data(f).as_slice(), &expected[..], "{ty}");
        seen += 1;
    }
    assert_eq!(seen, 8);
}
