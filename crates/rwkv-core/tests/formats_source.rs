//! `load_source` (a model file streamed from a `ByteSource`, as rwkv-web does with a JS
//! `Uint8Array`) gives exactly what `load` gives, reads only the header up front, fetches each
//! tensor in one read of its own size, and turns truncated or corrupt sources into errors.

mod formats_util;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use formats_util::Rng;
use rwkv_core::formats::{self, gguf, Format, LoadOptions};
use rwkv_core::model::{ByteSource, Model};
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::{DType, Error, Result};

/// A source over bytes in memory that counts what is read through it.
struct CountingSource {
    bytes: Vec<u8>,
    largest_read: AtomicU64,
    total_read: AtomicU64,
    reads: AtomicU64,
    /// Reads after this many fail (u64::MAX: never), as a network or a revoked file would.
    fail_after: u64,
}

impl CountingSource {
    fn new(bytes: Vec<u8>) -> Arc<CountingSource> {
        Arc::new(CountingSource {
            bytes,
            largest_read: AtomicU64::new(0),
            total_read: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            fail_after: u64::MAX,
        })
    }

    fn largest(&self) -> u64 {
        self.largest_read.load(Ordering::SeqCst)
    }

    fn total(&self) -> u64 {
        self.total_read.load(Ordering::SeqCst)
    }
}

impl ByteSource for CountingSource {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.reads.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(Error::invalid("test source: read failed"));
        }
        let start = usize::try_from(offset).map_err(|_| Error::invalid("offset"))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| Error::invalid(format!("test source: read past the end at {offset}")))?;
        buf.copy_from_slice(src);
        self.largest_read
            .fetch_max(buf.len() as u64, Ordering::SeqCst);
        self.total_read
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rwkv-source-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `model` written as `format`: the file's path and bytes.
fn written(dir: &Path, model: &Model, format: Format, ext: &str) -> (PathBuf, Vec<u8>) {
    let path = dir.join(format!("m.{ext}"));
    formats::write(model, &path, format).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn largest_tensor(m: &Model) -> u64 {
    m.tensors
        .values()
        .map(|t| t.data.len() as u64)
        .max()
        .unwrap()
}

#[test]
fn streamed_models_equal_loaded_ones_and_read_one_tensor_at_a_time() {
    let dir = temp_dir("eq");
    // Seeds differ per run of the loop so formats cannot agree by accident on shared data.
    for (format, ext, dtype, seed) in [
        (Format::Gguf, "gguf", DType::F32, 11),
        (Format::Gguf, "gguf", DType::Q8_0, 12),
        (Format::Safetensors, "st", DType::F16, 13),
        (Format::Safetensors, "st", DType::F32, 14),
    ] {
        let model = synth_model(SynthShape::Tiny, dtype, seed).unwrap();
        let (path, bytes) = written(&dir, &model, format, ext);
        let file_len = bytes.len() as u64;
        let from_file = formats::load(&path, &LoadOptions::default()).unwrap();
        let source = CountingSource::new(bytes);
        let progress_calls = std::cell::Cell::new(0u64);
        let progress = |done: u64, total: u64| {
            assert!(done <= total);
            progress_calls.set(progress_calls.get() + 1);
        };
        let streamed = formats::load_source(
            source.clone(),
            "m",
            &LoadOptions {
                quant: None,
                progress: Some(&progress),
            },
        )
        .unwrap();
        let header_reads = source.total();
        let largest = largest_tensor(&from_file);
        eprintln!(
            "{format} {dtype}: file {file_len} bytes, largest tensor {largest}, header read \
             {header_reads} bytes, largest read {}",
            source.largest()
        );
        assert!(progress_calls.get() > 2, "{format}: no progress reported");
        // Only the header (and, for safetensors, the small LoRA matrices it transposes) is read
        // up front: a quarter of the file is far more than either.
        assert!(
            header_reads * 4 < file_len,
            "{format} {dtype}: {header_reads} of {file_len} bytes read before any upload"
        );
        let lazy = streamed
            .tensors
            .values()
            .filter(|t| !t.data.is_resident())
            .count();
        assert!(
            lazy * 2 > streamed.tensors.len(),
            "{format}: only {lazy} of {} tensors left in the source",
            streamed.tensors.len()
        );
        assert_eq!(streamed.desc, from_file.desc);
        assert_eq!(streamed.format, from_file.format);
        assert_eq!(streamed.vocab.is_some(), from_file.vocab.is_some());
        assert_eq!(streamed.total_bytes(), from_file.total_bytes());
        assert_eq!(streamed.tensors.len(), from_file.tensors.len());
        // As an upload does it: each tensor made resident, compared, dropped.
        for (name, want) in &from_file.tensors {
            let got = streamed.tensors[name].resident().unwrap();
            assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{name}");
            assert_eq!(got.data.as_slice(), want.data.as_slice(), "{name}");
            assert_eq!(
                streamed.tensors[name].to_f32().unwrap(),
                want.to_f32().unwrap(),
                "{name}"
            );
        }
        assert!(
            source.largest() <= largest,
            "{format}: a read of {} bytes, more than the largest tensor ({largest})",
            source.largest()
        );
        // The tensors left in the source were fetched (by resident() and to_f32()).
        assert!(source.total() > streamed.total_bytes());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn streamed_models_can_be_quantized_on_load() {
    let dir = temp_dir("q");
    let model = synth_model(SynthShape::Tiny, DType::F16, 21).unwrap();
    let (path, bytes) = written(&dir, &model, Format::Safetensors, "st");
    let opts = LoadOptions {
        quant: Some(DType::Q8_0),
        progress: None,
    };
    let from_file = formats::load(&path, &opts).unwrap();
    let streamed = formats::load_source(CountingSource::new(bytes), "m.st", &opts).unwrap();
    let head = &streamed.tensors["head.weight"];
    assert_eq!(head.dtype, DType::Q8_0);
    assert!(
        head.data.is_resident(),
        "converted tensors are made in memory"
    );
    for (name, want) in &from_file.tensors {
        assert_eq!(
            streamed.tensors[name].data.read().unwrap(),
            want.data.read().unwrap(),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gguf_metadata_is_read_in_bounded_pieces() {
    // A model with a vocabulary of long tokens: a header of over 100 KB, several windows.
    let dir = temp_dir("vocab");
    let mut model = synth_model(SynthShape::Tiny, DType::F32, 31).unwrap();
    // Byte tokens (a vocabulary needs them all), then long multi-byte ones.
    let mut tokens = Vocab::byte_level(model.desc.vocab_size).to_gguf_tokens();
    for (i, t) in tokens.iter_mut().enumerate().skip(257) {
        *t = format!("tok{i}-").repeat(60);
    }
    model.vocab = Some(Vocab::from_gguf_tokens(&tokens).unwrap());
    let (path, bytes) = written(&dir, &model, Format::Gguf, "gguf");
    let from_file = gguf::GgufFile::open(&path).unwrap();
    let source = CountingSource::new(bytes);
    let streamed = gguf::GgufFile::open_source(Path::new("m.gguf"), source.clone()).unwrap();
    assert_eq!(streamed.kv, from_file.kv);
    assert_eq!(streamed.tensors, from_file.tensors);
    assert_eq!(streamed.data_start, from_file.data_start);
    assert_eq!(streamed.file_len(), from_file.file_len());
    assert!(streamed.data_start > 100_000, "{}", streamed.data_start);
    // The header is read once, front to back, in windows (64 KiB) far smaller than the file.
    assert!(source.total() <= streamed.data_start + (64 << 10));
    assert!(source.largest() <= 64 << 10, "{}", source.largest());
    let m = formats::load_source(source, "m.gguf", &LoadOptions::default()).unwrap();
    assert_eq!(m.vocab.unwrap().len(), model.desc.vocab_size);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_corrupt_and_failing_sources_give_errors() {
    let dir = temp_dir("bad");
    let model = synth_model(SynthShape::Tiny, DType::F32, 41).unwrap();
    let mut rng = Rng(0x5eed_0f5a_u64 ^ std::process::id() as u64);
    for (format, ext) in [(Format::Gguf, "gguf"), (Format::Safetensors, "st")] {
        let (_, bytes) = written(&dir, &model, format, ext);
        let header_end = match format {
            Format::Gguf => {
                gguf::GgufFile::open_source(Path::new("m"), CountingSource::new(bytes.clone()))
                    .unwrap()
                    .data_start as usize
            }
            _ => 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize,
        };
        // Truncated anywhere, in the header or in the data: always an error.
        let mut cuts = vec![
            0,
            1,
            4,
            8,
            9,
            24,
            header_end - 1,
            header_end,
            bytes.len() - 1,
        ];
        cuts.extend((0..40).map(|_| rng.next_u64() as usize % bytes.len()));
        for cut in cuts {
            let src = CountingSource::new(bytes[..cut].to_vec());
            let r = formats::load_source(src, "cut", &LoadOptions::default());
            assert!(
                r.is_err(),
                "{format} cut at {cut} of {} loaded",
                bytes.len()
            );
        }
        // Random bytes of the header changed: an error or a model, never a panic; a model's
        // tensors still read back (or fail) cleanly.
        for _ in 0..200 {
            let mut bad = bytes.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = rng.next_u64() as usize % header_end;
                bad[at] = rng.next_u64() as u8;
            }
            if let Ok(m) =
                formats::load_source(CountingSource::new(bad), "corrupt", &LoadOptions::default())
            {
                for t in m.tensors.values() {
                    let _ = t.resident();
                }
            }
        }
        // A source that fails mid-way: the error comes through, at load or at upload.
        for fail_after in [0, 1, 2, 5] {
            let src = Arc::new(CountingSource {
                fail_after,
                ..Arc::try_unwrap(CountingSource::new(bytes.clone()))
                    .ok()
                    .unwrap()
            });
            let result = formats::load_source(src, "failing", &LoadOptions::default())
                .and_then(|m| m.tensors.values().try_for_each(|t| t.resident().map(drop)));
            let e = result.unwrap_err().to_string();
            assert!(e.contains("read failed"), "{format}: {e}");
        }
    }
    // Formats that cannot be streamed say so.
    let (_, pth) = written(&dir, &model, Format::Pth, "pth");
    let e = formats::load_source(CountingSource::new(pth), "m.pth", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.pth") && e.contains("load_bytes"), "{e}");
    let e = formats::load_source(
        CountingSource::new(Vec::new()),
        "empty.gguf",
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("empty.gguf"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
