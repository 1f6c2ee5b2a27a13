//! `load_bytes` (files already in memory, as in a browser) gives exactly what `load` gives.

use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::DType;

fn same_model(a: &rwkv_core::Model, b: &rwkv_core::Model) {
    assert_eq!(a.desc, b.desc);
    assert_eq!(a.format, b.format);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{name}");
        assert_eq!(t.data.as_slice(), u.data.as_slice(), "{name}");
    }
}

#[test]
fn load_bytes_equals_load_for_every_written_format() {
    let dir = std::env::temp_dir().join(format!("rwkv-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = synth_model(SynthShape::Tiny, DType::F16, 4).unwrap();
    for (format, ext) in [
        (Format::Gguf, "gguf"),
        (Format::Safetensors, "st"),
        (Format::Pth, "pth"),
    ] {
        let path = dir.join(format!("m.{ext}"));
        formats::write(&model, &path, format).unwrap();
        let from_file = formats::load(&path, &LoadOptions::default()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let from_bytes = formats::load_bytes(bytes, "m", &LoadOptions::default()).unwrap();
        same_model(&from_file, &from_bytes);
        // The quant option applies the same way.
        let opts = LoadOptions {
            quant: Some(DType::Q8_0),
            progress: None,
        };
        let q = formats::load_bytes(std::fs::read(&path).unwrap(), "m", &opts).unwrap();
        assert_eq!(q.tensors["head.weight"].dtype, DType::Q8_0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_bytes_reads_rwkv_cpp_files() {
    let Some(bin) = rwkv_testing::refdata("refdata/rwkv.cpp/tests/tiny-rwkv-7v0-834K-Q5_1.bin")
    else {
        return;
    };
    let a = formats::load(&bin, &LoadOptions::default()).unwrap();
    let b = formats::load_bytes(
        std::fs::read(&bin).unwrap(),
        "tiny.bin",
        &LoadOptions::default(),
    )
    .unwrap();
    same_model(&a, &b);
}

#[test]
fn load_bytes_rejects_junk() {
    let e = formats::load_bytes(
        b"not a model at all".to_vec(),
        "junk.gguf",
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("junk.gguf") && e.contains("unknown model format"),
        "{e}"
    );
    let e = formats::load_bytes(Vec::new(), "empty.st", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.st"), "{e}");
    // A truncated GGUF is an error, not a panic.
    let model = synth_model(SynthShape::Tiny, DType::F32, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("rwkv-bytes-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.gguf");
    formats::write(&model, &p, Format::Gguf).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    assert!(formats::load_bytes(bytes, "t.gguf", &LoadOptions::default()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
