//! rwkv.cpp `.bin` files from ../shared/refdata/rwkv.cpp (skipped when absent).

mod formats_util;

use formats_util::*;
use rwkv_core::dtype::DType;
use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::model::{LoraRanks, ModelDesc, RwkvVersion};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn tiny_v7_loads_in_every_type_with_the_right_shapes() {
    let want = ModelDesc {
        version: RwkvVersion::V7,
        n_layer: 12,
        n_embd: 64,
        head_size: 64,
        vocab_size: 256,
        ffn_size: 256,
        lora: LoraRanks {
            w: 32,
            a: 32,
            v: 32,
            g: 32,
        },
    };
    let Some(fp32) = shared("refdata/rwkv.cpp/tests/tiny-rwkv-7v0-834K-FP32.bin") else {
        return;
    };
    let reference = formats::load(&fp32, &LoadOptions::default()).unwrap();
    for (suffix, matrix) in [
        ("FP32", DType::F32),
        ("FP16", DType::F16),
        ("Q5_0", DType::Q5_0),
        ("Q5_1", DType::Q5_1),
    ] {
        let path = fp32.with_file_name(format!("tiny-rwkv-7v0-834K-{suffix}.bin"));
        let m = formats::load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(m.desc, want, "{suffix}");
        assert_eq!(m.format, "rwkv.cpp");
        assert_eq!(
            m.tensors["blocks.3.att.key.weight"].dtype, matrix,
            "{suffix}"
        );
        assert_eq!(m.tensors["blocks.3.ffn.value.weight"].shape, vec![64, 256]);
        // LoRA is already [out, in] in rwkv.cpp files: w1 is [D_w, C], w2 [C, D_w].
        assert_eq!(m.tensors["blocks.3.att.w1"].shape, vec![32, 64]);
        assert_eq!(m.tensors["blocks.3.att.w2"].shape, vec![64, 32]);
        assert!(!m.tensors.contains_key("blocks.0.att.v1"));
        // Vectors stay f32 in every variant, so they match the FP32 file exactly.
        for name in [
            "blocks.5.att.x_a",
            "blocks.5.att.r_k",
            "blocks.5.att.w0",
            "blocks.0.ln0.weight",
        ] {
            assert_eq!(m.tensors[name].dtype, DType::F32);
            assert_eq!(
                m.tensors[name].data.as_slice(),
                reference.tensors[name].data.as_slice(),
                "{name} {suffix}"
            );
        }
    }
    // The FP16 file stores LoRA matrices in f16: same orientation, values within f16 rounding.
    let fp16 = formats::load(
        &fp32.with_file_name("tiny-rwkv-7v0-834K-FP16.bin"),
        &LoadOptions::default(),
    )
    .unwrap();
    let w1_16 = &fp16.tensors["blocks.4.att.w1"];
    assert_eq!(w1_16.dtype, DType::F16);
    let w1_32 = f32s(reference.tensors["blocks.4.att.w1"].data.as_slice());
    for (i, c) in w1_16.data.as_slice().chunks(2).enumerate() {
        let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
        assert!(
            (v - w1_32[i]).abs() <= 1e-3 * w1_32[i].abs().max(1e-2),
            "w1[{i}] {v} vs {}",
            w1_32[i]
        );
    }
    // The six split mixes are six different vectors, in the fused order.
    let mixes: Vec<Vec<f32>> = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"]
        .iter()
        .map(|m| {
            f32s(
                reference.tensors[&format!("blocks.2.att.{m}")]
                    .data
                    .as_slice(),
            )
        })
        .collect();
    for i in 0..6 {
        for j in i + 1..6 {
            assert_ne!(mixes[i], mixes[j]);
        }
    }
    let raw = std::fs::read(&fp32).unwrap();
    let fused_at = find(&raw, b"blocks.2.att.x_rwkvag") + "blocks.2.att.x_rwkvag".len();
    assert_eq!(
        f32s(&raw[fused_at + 4 * 64..fused_at + 8 * 64]),
        mixes[1],
        "x_w is the second row"
    );
}

#[test]
fn tiny_v7_converts_to_gguf_and_safetensors_unchanged() {
    let Some(path) = shared("refdata/rwkv.cpp/tests/tiny-rwkv-7v0-834K-FP16.bin") else {
        return;
    };
    let m = formats::load(&path, &LoadOptions::default()).unwrap();
    let dir = tmpdir("rwkvcpp-convert");
    for (format, ext) in [
        (Format::Gguf, "gguf"),
        (Format::Safetensors, "st"),
        (Format::Pth, "pth"),
    ] {
        let out = dir.join(format!("tiny.{ext}"));
        formats::write(&m, &out, format).unwrap();
        let back = formats::load(&out, &LoadOptions::default()).unwrap();
        assert_eq!(back.desc, m.desc);
        assert_same_tensors(&m, &back);
    }
}

#[test]
fn older_generations_parse_and_are_refused_by_name() {
    let cases = [
        (
            "refdata/rwkv.cpp/tests/tiny-rwkv-4v0-660K-FP32.bin",
            "RWKV v4 is not supported yet (only v7)",
        ),
        (
            "refdata/rwkv.cpp/tests/tiny-rwkv-5v1-730K-Q5_1.bin",
            "RWKV v5.1 is not supported yet (only v7)",
        ),
        (
            "refdata/rwkv.cpp/tests/tiny-rwkv-5v2-730K-FP16.bin",
            "RWKV v5.2 is not supported yet (only v7)",
        ),
        (
            "refdata/rwkv.cpp/tests/tiny-rwkv-6v0-3m-Q5_0.bin",
            "RWKV v6 is not supported yet (only v7)",
        ),
    ];
    for (rel, msg) in cases {
        let Some(path) = shared(rel) else { return };
        let e = formats::load(&path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(e, rwkv_core::Error::Model { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains(msg) && s.contains(path.file_name().unwrap().to_str().unwrap()),
            "{s}"
        );
    }
}
