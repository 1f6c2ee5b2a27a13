//! Hostile GGUF files from a structured generator, in the manner of llama.cpp's
//! tests/test-gguf.cpp: random valid containers (every value type, nested arrays, alignments,
//! every known tensor type), then each one with a single field made hostile: magic, version,
//! counts, key and string lengths, value and element types, array counts and nesting,
//! alignment, tensor names, dimension counts, dimensions, ggml types, offsets, overlaps,
//! truncation and random byte flips.
//!
//! Every file is read three ways: mapped from disk (`GgufFile::open`), streamed
//! (`GgufFile::open_source`) and as a model from memory (`formats::load_bytes`). Valid files
//! must give back every key and every tensor's bytes as written; hostile ones a typed format
//! error (the same one on both container paths), never a panic; and no read may hold more
//! memory at once than [`ALLOC_BYTES_PER_FILE_BYTE`] per byte of the file plus
//! [`ALLOC_FLOOR_BYTES`], counted by this binary's allocator.

#[path = "formats_util/alloc_meter.rs"]
mod alloc_meter;
mod formats_util;

use std::path::Path;
use std::sync::Arc;

use formats_util::gguf_build::{self, kv, string_bytes, ty, GgufSpec};
use formats_util::{tmpdir, Rng};
use rwkv_core::formats::gguf::GgufFile;
use rwkv_core::formats::{self, LoadOptions};
use rwkv_core::model::ByteSource;
use rwkv_core::{Error, Result};

/// Memory a GGUF header may cost per byte of file: a parsed entry is a few times its bytes (a
/// 9-byte one-letter string becomes a 24-byte `String` plus its heap byte, a 32-byte tensor
/// info ~100 bytes plus a name kept twice for the duplicate check), and vectors grow by
/// doubling. 32 leaves room for that and catches any reservation a count in the file drives.
const ALLOC_BYTES_PER_FILE_BYTE: usize = 32;
/// Fixed costs: hash sets' first buckets, error messages, the path.
const ALLOC_FLOOR_BYTES: usize = 64 << 10;

/// Runs `read` over a file of `file_len` bytes and fails when it held more than the budget.
fn bounded<T>(case: &str, how: &str, file_len: usize, read: impl FnOnce() -> T) -> T {
    let (out, held) = alloc_meter::held_during(read);
    let budget = file_len * ALLOC_BYTES_PER_FILE_BYTE + ALLOC_FLOOR_BYTES;
    assert!(
        held <= budget,
        "{case} ({how}): a {file_len}-byte file made the reader hold {held} bytes (budget {budget})"
    );
    out
}

struct MemSource(Vec<u8>);

impl ByteSource for MemSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::invalid("offset"))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| Error::invalid("read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// What a case must give.
enum Expect {
    /// The container parses and holds exactly what the spec wrote.
    Valid(GgufSpec),
    /// A format error whose message contains this.
    Refused(&'static str),
    /// Either; an accepted file must still keep every tensor inside the file.
    Either,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// Reads one case all three ways and checks the outcome, the memory and the paths' agreement.
fn check(dir: &Path, case: &Case) {
    let name = &case.name;
    let len = case.bytes.len();
    let path = dir.join("case.gguf");
    std::fs::write(&path, &case.bytes).unwrap();
    let mapped = bounded(name, "mapped", len, || GgufFile::open(&path));
    let src: Arc<dyn ByteSource> = Arc::new(MemSource(case.bytes.clone()));
    let streamed = bounded(name, "streamed", len, || {
        GgufFile::open_source(Path::new("case.gguf"), src)
    });
    let bytes = case.bytes.clone();
    let model = bounded(name, "load_bytes", len, || {
        formats::load_bytes(bytes, "case.gguf", &LoadOptions::default())
    });
    match &model {
        Err(Error::Format { .. } | Error::Model { .. }) => {}
        Err(other) => panic!("{name}: load_bytes gave an untyped error: {other:?}"),
        Ok(_) => panic!("{name}: a file without rwkv7 tensors loaded as a model"),
    }
    match (&mapped, &streamed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                (&a.kv, &a.tensors),
                (&b.kv, &b.tensors),
                "{name}: paths differ"
            );
            for t in &a.tensors {
                let end = a.data_start + t.offset + t.n_bytes;
                assert!(
                    end <= len as u64,
                    "{name}: tensor '{}' past the end",
                    t.name
                );
                assert_eq!(
                    a.tensor_data(t).as_slice(),
                    &b.tensor_data(t).read().unwrap()[..],
                    "{name}: tensor '{}' bytes differ between the paths",
                    t.name
                );
            }
        }
        (Err(a), Err(b)) => {
            assert!(matches!(a, Error::Format { .. }), "{name}: {a:?}");
            let (a, b) = (a.to_string(), b.to_string());
            // The paths name the file differently; the rest must match.
            assert_eq!(
                a.replace(&path.display().to_string(), "case.gguf"),
                b,
                "{name}: the mapped and streamed readers fail differently"
            );
        }
        (a, b) => panic!(
            "{name}: mapped {:?} but streamed {:?}",
            a.as_ref().err().map(ToString::to_string),
            b.as_ref().err().map(ToString::to_string)
        ),
    }
    match &case.expect {
        Expect::Valid(spec) => {
            let g = mapped
                .as_ref()
                .unwrap_or_else(|e| panic!("{name}: valid file refused: {e}"));
            assert_eq!(g.kv.len(), spec.kvs.len(), "{name}");
            assert_eq!(g.tensors.len(), spec.tensors.len(), "{name}");
            for (got, want) in g.tensors.iter().zip(&spec.tensors) {
                assert_eq!(got.name.as_bytes(), want.name.as_slice(), "{name}");
                assert_eq!(got.dims, want.dims, "{name}");
                assert_eq!(got.ggml_type, want.ggml_type, "{name}");
                assert_eq!(got.offset, want.offset, "{name}");
                assert_eq!(g.tensor_data(got).as_slice(), &want.data[..], "{name}");
            }
        }
        Expect::Refused(part) => match &mapped {
            Ok(_) => panic!("{name}: hostile file accepted"),
            Err(e) => assert!(
                e.to_string().contains(part),
                "{name}: {e} (wanted '{part}')"
            ),
        },
        Expect::Either => {}
    }
}

fn with(spec: &GgufSpec, change: impl FnOnce(&mut GgufSpec)) -> Vec<u8> {
    let mut s = spec.clone();
    change(&mut s);
    s.build()
}

/// Where a field of `spec`'s file lies: the offset just past tensor `i`'s name (its n_dims).
fn tensor_info_at(spec: &GgufSpec, i: usize) -> usize {
    let mut at = 24;
    for kv in &spec.kvs {
        at += 8 + kv.key.len() + 4 + kv.value.len();
    }
    for t in &spec.tensors[..i] {
        at += 8 + t.name.len() + 4 + 8 * t.dims.len() + 4 + 8;
    }
    at + 8 + spec.tensors[i].name.len()
}

/// Every hostile variant of `spec` (a valid container) with what it must give.
fn hostile_cases(spec: &GgufSpec, rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut refused = |name: &str, bytes: Vec<u8>, part: &'static str| {
        cases.push(Case {
            name: name.to_string(),
            bytes,
            expect: Expect::Refused(part),
        })
    };
    let valid = spec.build();

    // Header.
    refused(
        "magic",
        with(spec, |s| s.magic = *b"GGUX"),
        "not a GGUF file",
    );
    refused("version 1", with(spec, |s| s.version = 1), "GGUF v1");
    for v in [0, 4, u32::MAX] {
        refused(
            "version",
            with(spec, |s| s.version = v),
            "unsupported GGUF version",
        );
    }
    refused(
        "big-endian",
        with(spec, |s| s.version = 3u32.swap_bytes()),
        "big-endian",
    );
    for n in [u64::MAX, 1 << 40, valid.len() as u64] {
        refused(
            "tensor count",
            with(spec, |s| s.n_tensors = Some(n)),
            "tensor count",
        );
        refused(
            "kv count",
            with(spec, |s| s.n_kv = Some(n)),
            "metadata count",
        );
    }

    // Metadata keys and values (appended after the generated ones, so they are read).
    let push = |s: &mut GgufSpec, k: gguf_build::KvSpec| s.kvs.push(k);
    for n in [u64::MAX, 65536] {
        refused(
            "key length",
            with(spec, |s| {
                let mut k = kv("x", ty::U8, vec![0]);
                k.key_len = Some(n);
                push(s, k)
            }),
            "the limit is 65535",
        );
    }
    refused(
        "key runs past the end",
        with(spec, |s| {
            let mut k = kv("x", ty::U8, vec![0]);
            k.key_len = Some(65535);
            push(s, k)
        }),
        "truncated",
    );
    refused(
        "key not UTF-8",
        with(spec, |s| {
            let mut k = kv("x", ty::U8, vec![0]);
            k.key = vec![0xff, 0xfe];
            push(s, k)
        }),
        "not valid UTF-8",
    );
    refused(
        "duplicate key",
        with(spec, |s| {
            push(s, kv("dup", ty::U8, vec![1]));
            push(s, kv("dup", ty::U8, vec![2]))
        }),
        "appears twice",
    );
    for t in [13, 100, u32::MAX] {
        refused(
            "value type",
            with(spec, |s| push(s, kv("x", t, vec![0; 8]))),
            "unknown value type",
        );
        refused(
            "array element type",
            with(spec, |s| {
                push(
                    s,
                    kv("x", ty::ARRAY, gguf_build::array_bytes(t, 1, &[0; 8])),
                )
            }),
            "unknown array element type",
        );
    }
    refused(
        "string length",
        with(spec, |s| {
            push(s, kv("x", ty::STRING, u64::MAX.to_le_bytes().to_vec()))
        }),
        "truncated",
    );
    refused(
        "bool byte",
        with(spec, |s| push(s, kv("x", ty::BOOL, vec![2]))),
        "bool byte is 2",
    );
    for (elem, count) in [
        (ty::U8, u64::MAX),
        (ty::U64, u64::MAX / 8 + 1),
        (ty::STRING, 1 << 40),
        (ty::ARRAY, 1 << 33),
        (ty::U32, valid.len() as u64),
    ] {
        refused(
            "array count",
            with(spec, |s| {
                push(
                    s,
                    kv("x", ty::ARRAY, gguf_build::array_bytes(elem, count, &[])),
                )
            }),
            "elements, more than the",
        );
    }
    refused(
        "array nesting",
        with(spec, |s| {
            let mut v = gguf_build::array_bytes(ty::U8, 0, &[]);
            for _ in 0..9 {
                v = gguf_build::array_bytes(ty::ARRAY, 1, &v);
            }
            push(s, kv("x", ty::ARRAY, v))
        }),
        "nests arrays deeper",
    );

    // Alignment (replacing any the container has).
    let realign = |s: &mut GgufSpec, t: u32, v: Vec<u8>| {
        s.kvs.retain(|k| k.key != b"general.alignment");
        s.kvs.push(kv("general.alignment", t, v));
    };
    for a in [0u32, 3, 48, 1 << 31] {
        refused(
            "alignment",
            with(spec, |s| realign(s, ty::U32, a.to_le_bytes().to_vec())),
            "not a power of two",
        );
    }
    refused(
        "alignment 2^40",
        with(spec, |s| {
            realign(s, ty::U64, (1u64 << 40).to_le_bytes().to_vec())
        }),
        "not a power of two",
    );
    refused(
        "alignment as a string",
        with(spec, |s| realign(s, ty::STRING, string_bytes(b"32"))),
        "not a power of two",
    );

    // Tensor infos.
    let last = spec.tensors.len() - 1;
    for n in [u64::MAX, 1025] {
        refused(
            "tensor name length",
            with(spec, |s| s.tensors[last].name_len = Some(n)),
            "the limit is 1024",
        );
    }
    refused(
        "tensor name not UTF-8",
        with(spec, |s| s.tensors[last].name = vec![b't', 0xc3]),
        "not valid UTF-8",
    );
    if spec.tensors.len() > 1 {
        refused(
            "duplicate tensor name",
            with(spec, |s| s.tensors[last].name = s.tensors[0].name.clone()),
            "appears twice",
        );
        let first_offset = spec.tensors[0].offset;
        refused(
            "overlapping tensors",
            with(spec, |s| s.tensors[last].offset = first_offset),
            "overlap",
        );
    }
    for n in [0, 5, u32::MAX] {
        refused(
            "dimension count",
            with(spec, |s| s.tensors[last].n_dims = Some(n)),
            "dimensions (1 to 4 allowed)",
        );
    }
    refused(
        "dimensions overflow",
        with(spec, |s| {
            let t = &mut s.tensors[last];
            t.dims = vec![t.dims[0], 1 << 32, 1 << 32, 1 << 32];
        }),
        "are too large",
    );
    let (_, block, _) = *gguf_build::GGML_TYPES
        .iter()
        .find(|g| g.0 == spec.tensors[last].ggml_type)
        .unwrap();
    if block > 1 {
        refused(
            "row not whole blocks",
            with(spec, |s| s.tensors[last].dims[0] = block + 1),
            "not whole",
        );
    }
    for t in [4, 5, 16, 23, 40, u32::MAX] {
        refused(
            "ggml type",
            with(spec, |s| s.tensors[last].ggml_type = t),
            "unknown ggml type",
        );
    }
    if spec.alignment > 1 {
        refused(
            "unaligned offset",
            with(spec, |s| s.tensors[last].offset += 1),
            "not a multiple of the alignment",
        );
    }
    let huge = u64::MAX / spec.alignment * spec.alignment;
    refused(
        "offset overflows",
        with(spec, |s| s.tensors[last].offset = huge),
        "runs past the end",
    );
    let past = (valid.len() as u64).div_ceil(spec.alignment) * spec.alignment;
    refused(
        "offset past the end",
        with(spec, |s| {
            s.tensors[last].offset = past;
            s.tensors[last].data.clear(); // else the builder would write it there
        }),
        "runs past the end",
    );

    // Truncation anywhere (the data ends with the last tensor, so every cut loses something).
    for _ in 0..6 {
        // Not 0: an empty file is refused before parsing, in words that differ by path.
        let cut = 1 + (rng.next_u64() as usize) % (valid.len() - 1);
        cases.push(Case {
            name: format!("cut at {cut}"),
            bytes: valid[..cut].to_vec(),
            expect: Expect::Refused(""),
        });
    }
    // Random flips in the header: anything may happen except a panic or a runaway allocation.
    let header_len = tensor_info_at(spec, last) + 4 + 8 * spec.tensors[last].dims.len() + 12;
    for _ in 0..12 {
        let mut bytes = valid.clone();
        let at = (rng.next_u64() as usize) % header_len.min(bytes.len());
        bytes[at] ^= 1 << (rng.next_u64() % 8);
        cases.push(Case {
            name: format!("bit flip at {at}"),
            bytes,
            expect: Expect::Either,
        });
    }
    cases
}

#[test]
fn generated_containers_read_back_and_hostile_fields_are_refused() {
    let dir = tmpdir("gguf-hostile");
    let mut rng = Rng(0x6767_7566_0016);
    let mut n_valid = 0;
    let mut n_hostile = 0;
    for round in 0..24 {
        let spec = gguf_build::random_container(&mut rng);
        check(
            &dir,
            &Case {
                name: format!("valid #{round}"),
                bytes: spec.build(),
                expect: Expect::Valid(spec.clone()),
            },
        );
        n_valid += 1;
        for mut case in hostile_cases(&spec, &mut rng) {
            case.name = format!("#{round} {}", case.name);
            check(&dir, &case);
            n_hostile += 1;
        }
    }
    assert!(
        n_valid == 24 && n_hostile > 24 * 50,
        "{n_valid} valid, {n_hostile} hostile"
    );
}
