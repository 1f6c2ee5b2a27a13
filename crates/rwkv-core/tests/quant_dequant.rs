//! Dequantizers against gguf-py's output (../shared/refdata/gguf-py-kquant-vectors), bit for bit,
//! plus length checks and the f16/bf16 bit conversions.

use std::path::PathBuf;

use rwkv_core::quant::{bf16_bits_to_f32, dequantize, f16_bits_to_f32};
use rwkv_core::DType;

/// The vectors folder, or None after a skip (a failure under RWKV_REQUIRE_REFDATA=1).
fn vectors_dir() -> Option<PathBuf> {
    rwkv_testing::refdata("refdata/gguf-py-kquant-vectors")
}

#[test]
fn every_block_type_matches_gguf_py_bit_for_bit() {
    let Some(dir) = vectors_dir() else { return };
    let cases = [
        ("q4_0_2x128", DType::Q4_0),
        ("q4_1_2x128", DType::Q4_1),
        ("q5_0_2x128", DType::Q5_0),
        ("q5_1_2x128", DType::Q5_1),
        ("q8_0_4x128", DType::Q8_0),
        ("q4_k_4x512", DType::Q4K),
        ("q5_k_2x512", DType::Q5K),
        ("q6_k_4x512", DType::Q6K),
    ];
    for (stem, dtype) in cases {
        let blocks = std::fs::read(dir.join(format!("{stem}.blocks.bin"))).unwrap();
        let expected_bytes = std::fs::read(dir.join(format!("{stem}.expected_f32.bin"))).unwrap();
        let expected: Vec<u32> = expected_bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (rows, cols) = {
            let shape = stem.rsplit('_').next().unwrap();
            let (r, c) = shape.split_once('x').unwrap();
            (r.parse::<usize>().unwrap(), c.parse::<usize>().unwrap())
        };
        assert_eq!(expected.len(), rows * cols, "{stem}");
        assert_eq!(
            Some(blocks.len()),
            dtype.tensor_bytes(&[rows, cols]),
            "{stem}"
        );

        // Whole tensor at once.
        let mut out = vec![f32::NAN; rows * cols];
        dequantize(dtype, &blocks, &mut out).unwrap();
        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        let mismatches = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(
            mismatches, 0,
            "{stem}: {mismatches} values differ from gguf-py"
        );

        // Row by row, as the CPU backend calls it.
        let row_bytes = dtype.row_bytes(cols).unwrap();
        for r in 0..rows {
            let mut row = vec![f32::NAN; cols];
            dequantize(dtype, &blocks[r * row_bytes..(r + 1) * row_bytes], &mut row).unwrap();
            for (c, v) in row.iter().enumerate() {
                assert_eq!(
                    v.to_bits(),
                    expected[r * cols + c],
                    "{stem} row {r} col {c}"
                );
            }
        }
    }
}

#[test]
fn length_mismatches_are_errors_not_panics() {
    for dtype in DType::ALL {
        let elems = dtype.block_elems();
        let bytes = dtype.block_bytes();
        let src = vec![0x11u8; 3 * bytes];
        let mut out = vec![0f32; 3 * elems];
        assert!(dequantize(dtype, &src, &mut out).is_ok(), "{dtype}");
        assert!(
            dequantize(dtype, &src[..2 * bytes], &mut out).is_err(),
            "{dtype} short src"
        );
        assert!(
            dequantize(dtype, &src[..3 * bytes - 1], &mut out).is_err(),
            "{dtype} ragged"
        );
        let mut long_out = vec![0f32; 4 * elems];
        assert!(
            dequantize(dtype, &src, &mut long_out).is_err(),
            "{dtype} long out"
        );
        if elems > 1 {
            let mut partial = vec![0f32; 3 * elems - 1];
            assert!(
                dequantize(dtype, &src, &mut partial).is_err(),
                "{dtype} partial block"
            );
        }
        assert!(dequantize(dtype, &[], &mut []).is_ok(), "{dtype} empty");
    }
}

#[test]
fn half_conversions_are_exact_for_all_65536_patterns() {
    for bits in 0..=u16::MAX {
        let ours = f16_bits_to_f32(bits);
        let reference = half::f16::from_bits(bits).to_f32();
        if reference.is_nan() {
            assert!(ours.is_nan(), "{bits:#06x}");
            assert_eq!(
                ours.to_bits() & 0x0040_0000,
                0x0040_0000,
                "{bits:#06x} not quiet"
            );
            assert_eq!(
                ours.is_sign_negative(),
                reference.is_sign_negative(),
                "{bits:#06x}"
            );
        } else {
            assert_eq!(ours.to_bits(), reference.to_bits(), "{bits:#06x}");
        }
        // bf16 is the top half of an f32, NaN payloads included (ggml shifts too; `half` quiets
        // NaNs, so compare those by shift).
        assert_eq!(
            bf16_bits_to_f32(bits).to_bits(),
            (bits as u32) << 16,
            "{bits:#06x}"
        );
        let bf16_reference = half::bf16::from_bits(bits).to_f32();
        if !bf16_reference.is_nan() {
            assert_eq!(
                bf16_bits_to_f32(bits).to_bits(),
                bf16_reference.to_bits(),
                "{bits:#06x}"
            );
        }
    }
    // Through the public entry point as well.
    let src = [0x00, 0x3c, 0x01, 0x80, 0x00, 0xfc];
    let mut out = [0f32; 3];
    dequantize(DType::F16, &src, &mut out).unwrap();
    assert_eq!(out[0], 1.0);
    assert_eq!(out[1], -(2f32.powi(-24)));
    assert_eq!(out[2], f32::NEG_INFINITY);
}
