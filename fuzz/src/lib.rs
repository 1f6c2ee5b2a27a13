//! What the fuzz targets share: an in-memory [`ByteSource`], an allocation meter that holds
//! every reader to a memory budget proportional to its input, and the properties any model a
//! reader accepts must have.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::model::{ByteSource, Model, TensorBytes};
use rwkv_core::{Error, Result};

/// Bytes a reader may hold at once per byte of input. A parsed header costs a few times its
/// bytes (a 1-byte pickle opcode becomes an `Rc` node of ~150 bytes on the unpickler's stack,
/// JSON numbers become 32-byte values); anything beyond this is amplification a hostile file
/// could use to exhaust memory from a small download.
pub const ALLOC_BYTES_PER_INPUT_BYTE: usize = 256;
/// Allowance independent of the input: fixed tables (the tokenizer trie's 256-entry root, hash
/// maps' first buckets) and error messages.
pub const ALLOC_FLOOR_BYTES: usize = 4 << 20;

/// The global allocator of every target: the system allocator (so the sanitizers still see
/// every block), counting live bytes and their high-water mark.
pub struct MeteredAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn note_grow(n: usize) {
    let live = LIVE_BYTES.fetch_add(n, Ordering::Relaxed) + n;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for MeteredAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            note_grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            note_grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            note_grow(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: MeteredAlloc = MeteredAlloc;

/// Runs `f` (a reader given `input_len` bytes) and fails if it held more than
/// [`ALLOC_BYTES_PER_INPUT_BYTE`] per input byte plus [`ALLOC_FLOOR_BYTES`] at any moment.
/// libFuzzer runs one input at a time on one thread, so the counters see only `f`.
pub fn within_memory_budget<T>(what: &str, input_len: usize, f: impl FnOnce() -> T) -> T {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(before, Ordering::Relaxed);
    let out = f();
    let held = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    let budget = input_len
        .saturating_mul(ALLOC_BYTES_PER_INPUT_BYTE)
        .saturating_add(ALLOC_FLOOR_BYTES);
    assert!(
        held <= budget,
        "{what}: {input_len} bytes of input made the reader hold {held} bytes at once (budget {budget})"
    );
    out
}

/// A [`ByteSource`] over bytes in memory, as rwkv-web's JS `Uint8Array` source behaves.
pub struct MemSource(pub Vec<u8>);

impl ByteSource for MemSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| {
                Error::invalid(format!("read of {} at {offset} is past the end", buf.len()))
            })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The name the targets give their input in errors.
pub const INPUT_NAME: &str = "fuzz-input";

/// Every tensor of a model read from `file` has bytes matching its dtype and shape, lying
/// inside the file (mapped or streamed windows) and readable.
pub fn check_model(model: &Model, file: &[u8]) {
    for (name, t) in &model.tensors {
        let want = t.dtype.tensor_bytes(&t.shape);
        assert_eq!(
            want,
            Some(t.data.len()),
            "tensor '{name}' {} {:?}: byte count disagrees with its shape",
            t.dtype,
            t.shape
        );
        match &t.data {
            TensorBytes::Mapped { map, range } => {
                assert_eq!(map.len(), file.len(), "tensor '{name}' maps another buffer");
                assert!(
                    range.end <= file.len(),
                    "tensor '{name}' range {range:?} past the file"
                );
            }
            TensorBytes::Source { src, range } => {
                assert_eq!(
                    src.len(),
                    file.len() as u64,
                    "tensor '{name}' reads another source"
                );
                assert!(
                    range.start <= range.end && range.end <= file.len() as u64,
                    "tensor '{name}' range {range:?} past the file"
                );
                let got = t.data.read().expect("a checked window reads");
                assert_eq!(&got[..], &file[range.start as usize..range.end as usize]);
            }
            TensorBytes::Owned(_) => {}
        }
    }
}

/// Both tensors hold the same bytes (one may be mapped and the other streamed).
pub fn assert_same_models(a: &Model, b: &Model) {
    assert_eq!(a.desc, b.desc);
    assert_eq!(a.vocab, b.vocab);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        assert_eq!(
            (ta.dtype, &ta.shape),
            (tb.dtype, &tb.shape),
            "tensor '{name}'"
        );
        assert_eq!(
            ta.data.read().unwrap(),
            tb.data.read().unwrap(),
            "tensor '{name}' bytes"
        );
    }
}

/// Loads `data` from memory ([`formats::load_bytes`]) and checks what it gives.
pub fn load_bytes_checked(data: &[u8]) -> Result<Model> {
    let loaded = formats::load_bytes(data.to_vec(), INPUT_NAME, &LoadOptions::default());
    if let Ok(model) = &loaded {
        check_model(model, data);
    }
    loaded
}

/// Loads `data` both from memory and streamed through a [`ByteSource`]
/// ([`formats::load_source`], GGUF and safetensors): the two paths must agree, error for error
/// and tensor for tensor.
pub fn load_both_ways(data: &[u8]) {
    let from_bytes = load_bytes_checked(data);
    let src: Arc<dyn ByteSource> = Arc::new(MemSource(data.to_vec()));
    let streamable = matches!(
        formats::detect_source(src.as_ref(), INPUT_NAME),
        Ok(Format::Gguf | Format::Safetensors)
    );
    if !streamable {
        return; // load_source refuses other formats by design
    }
    let streamed = formats::load_source(src, INPUT_NAME, &LoadOptions::default());
    match (&from_bytes, &streamed) {
        (Ok(a), Ok(b)) => {
            check_model(b, data);
            assert_same_models(a, b);
        }
        (Err(a), Err(b)) => assert_eq!(
            a.to_string(),
            b.to_string(),
            "the two paths fail differently"
        ),
        (a, b) => panic!(
            "load_bytes and load_source disagree: {:?} vs {:?}",
            a.as_ref().err().map(ToString::to_string),
            b.as_ref().err().map(ToString::to_string)
        ),
    }
}

/// The path errors name.
pub fn input_path() -> &'static Path {
    Path::new(INPUT_NAME)
}
