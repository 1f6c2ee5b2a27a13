//! Model file formats: GGUF, safetensors, PyTorch `.pth`, rwkv.cpp `.bin`.
//! Each reader validates every count, length and offset against the file before it allocates,
//! and maps the file's own names and layouts onto the canonical [`Model`].
//!
//! Entry points: [`load`] (format detected from the first bytes), [`load_bytes`] (a file already
//! in memory), [`load_source`] (GGUF and safetensors streamed from a [`ByteSource`]: only the
//! header is read, tensors are fetched when used), [`write`] (GGUF, safetensors, `.pth`; atomic),
//! [`Format`], and [`gguf::GgufFile`] for reading GGUF metadata.

// The workspace's rust-version (1.85) predates `usize::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

pub(crate) mod canonical;
pub mod gguf;
pub(crate) mod pickle;
pub mod pth;
pub mod rwkvcpp;
pub mod safetensors;
pub mod state;
pub mod zip;

pub use state::{load_state_file, write_state_file};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::model::{ByteSource, FileBytes};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Model, Tensor, TensorBytes};

/// Options for [`load`].
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Convert the large matrices (see [`crate::model::is_large_matrix`]) to this dtype.
    pub quant: Option<DType>,
    /// Called with (bytes done, bytes total) while tensors are read/converted.
    pub progress: Option<&'a dyn Fn(u64, u64)>,
}

/// A model file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Gguf,
    Safetensors,
    Pth,
    RwkvCpp,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Gguf,
        Format::Safetensors,
        Format::Pth,
        Format::RwkvCpp,
    ];

    /// The name stored in [`Model::format`]: "gguf", "safetensors", "pth", "rwkv.cpp".
    pub const fn name(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Pth => "pth",
            Format::RwkvCpp => "rwkv.cpp",
        }
    }

    /// The format a file name suggests: `.gguf`, `.st`/`.safetensors`, `.pth`/`.pt`, `.bin`.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "gguf" => Some(Format::Gguf),
            "st" | "safetensors" => Some(Format::Safetensors),
            "pth" | "pt" => Some(Format::Pth),
            "bin" => Some(Format::RwkvCpp),
            _ => None,
        }
    }

    /// Parses a name as [`Format::name`] prints it (also "st", "torch", "rwkvcpp", "bin").
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "gguf" => Some(Format::Gguf),
            "st" | "safetensors" => Some(Format::Safetensors),
            "pth" | "pt" | "torch" => Some(Format::Pth),
            "rwkv.cpp" | "rwkvcpp" | "bin" => Some(Format::RwkvCpp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// GGUF magic "GGUF" as it lies in the file.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Zip local file header "PK\x03\x04" (PyTorch's `.pth` since torch 1.6).
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// rwkv.cpp magic 0x67676d66, little-endian on disk ("fmgg").
const RWKVCPP_MAGIC: &[u8; 4] = b"fmgg";

/// Detects the format of `path` from its first bytes (the extension is not trusted).
pub fn detect(path: &Path) -> Result<Format> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(&mut head[got..])
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    detect_bytes(path, &head[..got], len)
}

/// [`detect`] for a file read through `source`; `name` stands for it in errors.
pub fn detect_source(source: &dyn ByteSource, name: &str) -> Result<Format> {
    let mut head = [0u8; 9];
    let n = usize::try_from(source.len()).map_or(head.len(), |len| len.min(head.len()));
    source.read_at(0, &mut head[..n])?;
    detect_bytes(Path::new(name), &head[..n], source.len())
}

fn detect_bytes(path: &Path, head: &[u8], file_len: u64) -> Result<Format> {
    if head.is_empty() {
        return Err(Error::format(path, "file is empty"));
    }
    if head.starts_with(GGUF_MAGIC) {
        return Ok(Format::Gguf);
    }
    if head.starts_with(ZIP_MAGIC) {
        return Ok(Format::Pth);
    }
    if head.starts_with(RWKVCPP_MAGIC) {
        return Ok(Format::RwkvCpp);
    }
    if head.len() >= 9 {
        let n = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        if head[8] == b'{' && n.checked_add(8).is_some_and(|end| end <= file_len) {
            return Ok(Format::Safetensors);
        }
    }
    if head.starts_with(b"\x80") && head.len() >= 2 && head[1] <= 5 {
        return Err(Error::format(
            path,
            "legacy (pre-zip) PyTorch file: re-save it with torch >= 1.6 (torch.save) to load it",
        ));
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::format(
        path,
        format!(
            "unknown model format (first bytes {}); expected GGUF, safetensors, .pth or rwkv.cpp .bin",
            shown.join(" ")
        ),
    ))
}

/// Reads any supported model file (format detected from its first bytes), converts the large
/// matrices when `opts.quant` asks for it, and checks the result with [`crate::model::validate`].
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let format = detect(path)?;
    let mut model = match format {
        Format::Gguf => gguf::read_model(path)?,
        Format::Safetensors => safetensors::read_model(path)?,
        Format::Pth => pth::read_model(path)?,
        Format::RwkvCpp => rwkvcpp::read_model(path)?,
    };
    model.format = format.name();
    crate::model::validate(&model)?;
    finish_tensors(&mut model, opts)?;
    Ok(model)
}

/// [`load`] for a file already in memory (a browser's `File`, bytes from a network): the same
/// readers and checks, tensors served as windows of `bytes`. `name` stands for the file in
/// errors.
pub fn load_bytes(bytes: Vec<u8>, name: &str, opts: &LoadOptions) -> Result<Model> {
    let path = Path::new(name);
    let format = detect_bytes(path, &bytes[..bytes.len().min(9)], bytes.len() as u64)?;
    let map = Arc::new(FileBytes::Memory(bytes));
    let mut model = match format {
        Format::Gguf => gguf::read_model_from(path, map)?,
        Format::Safetensors => safetensors::read_model_from(path, map)?,
        Format::Pth => pth::read_model_from(path, map)?,
        Format::RwkvCpp => rwkvcpp::read_model_from(path, map)?,
    };
    model.format = format.name();
    crate::model::validate(&model)?;
    finish_tensors(&mut model, opts)?;
    Ok(model)
}

/// [`load`] for a file read through `source` (a browser's `Uint8Array` kept outside wasm memory,
/// for one): GGUF and safetensors only. The header is read in bounded pieces; tensor data is
/// left in the source ([`TensorBytes::Source`]) and fetched by whoever uses it, so a caller that
/// uploads one tensor at a time (and drops it) holds about one tensor in memory, never the file.
/// Tensors the readers rearrange (safetensors LoRA transposes) and those `opts.quant` converts
/// are fetched here and kept in memory. `name` stands for the file in errors.
pub fn load_source(source: Arc<dyn ByteSource>, name: &str, opts: &LoadOptions) -> Result<Model> {
    let path = Path::new(name);
    let format = detect_source(source.as_ref(), name)?;
    let mut model = match format {
        Format::Gguf => gguf::read_model_source(path, source)?,
        Format::Safetensors => safetensors::read_model_source(path, source)?,
        Format::Pth | Format::RwkvCpp => {
            return Err(Error::format(
                path,
                format!(
                    "{format} files cannot be streamed (only GGUF and safetensors); load them with load_bytes"
                ),
            ))
        }
    };
    model.format = format.name();
    crate::model::validate(&model)?;
    finish_tensors(&mut model, opts)?;
    Ok(model)
}

/// Applies `opts.quant` to the large matrices and reports progress over all tensor bytes.
fn finish_tensors(model: &mut Model, opts: &LoadOptions) -> Result<()> {
    let total = model.total_bytes();
    let mut done = 0u64;
    let report = |done: u64| {
        if let Some(p) = opts.progress {
            p(done, total)
        }
    };
    report(0);
    let source = model.source.clone();
    for (name, tensor) in model.tensors.iter_mut() {
        let n_bytes = tensor.data.len() as u64;
        if let Some(target) = opts.quant {
            if crate::model::is_large_matrix(model.desc.version, name) && tensor.dtype != target {
                *tensor = convert_tensor(&source, name, tensor, target)?;
            }
        }
        done += n_bytes;
        report(done);
    }
    Ok(())
}

/// Values converted per step by [`convert_tensor`].
const CONVERT_CHUNK_VALUES: usize = 1 << 24;

/// Converts one matrix to `target` (dequantize to f32, then quantize row by row).
fn convert_tensor(path: &Path, name: &str, tensor: &Tensor, target: DType) -> Result<Tensor> {
    convert_tensor_chunked(path, name, tensor, target, CONVERT_CHUNK_VALUES)
}

fn convert_tensor_chunked(
    path: &Path,
    name: &str,
    tensor: &Tensor,
    target: DType,
    chunk_values: usize,
) -> Result<Tensor> {
    let (_, cols) = tensor.rows_cols();
    let fail = |what: String| {
        Error::model(
            path,
            format!("cannot convert tensor '{name}' to {target}: {what}"),
        )
    };
    if target.row_bytes(cols).is_none() {
        return Err(fail(format!(
            "its rows of {cols} values are not whole blocks of {}",
            target.block_elems()
        )));
    }
    let (rows, _) = tensor.rows_cols();
    let src_row = tensor
        .dtype
        .row_bytes(cols)
        .ok_or_else(|| fail("rows are not whole blocks".into()))?;
    // Convert in chunks of about 16M values (64 MB of f32) so a 65536-row embedding never needs
    // a full f32 copy; quantize() still spreads each chunk over threads.
    let chunk_rows = (chunk_values / cols.max(1)).clamp(1, rows.max(1));
    let mut bytes = Vec::with_capacity(target.row_bytes(cols).unwrap_or(0).saturating_mul(rows));
    let mut values = Vec::new();
    let src = tensor.data.read().map_err(|e| fail(e.to_string()))?;
    for first in (0..rows).step_by(chunk_rows) {
        let n = chunk_rows.min(rows - first);
        values.resize(n * cols, 0f32);
        let part = &src[first * src_row..(first + n) * src_row];
        crate::quant::dequantize(tensor.dtype, part, &mut values)
            .map_err(|e| fail(e.to_string()))?;
        let q = crate::quant::quantize(target, &values, cols).map_err(|e| fail(e.to_string()))?;
        bytes.extend_from_slice(&q);
    }
    Tensor::new(target, tensor.shape.clone(), TensorBytes::owned(bytes))
        .map_err(|e| fail(e.to_string()))
}

/// Writes `model` as `format` (GGUF, safetensors or `.pth`) atomically: the file appears whole
/// or not at all.
pub fn write(model: &Model, path: &Path, format: Format) -> Result<()> {
    match format {
        Format::Gguf => gguf::write(model, path),
        Format::Safetensors => safetensors::write(model, path),
        Format::Pth => pth::write(model, path),
        Format::RwkvCpp => Err(Error::invalid(format!(
            "{}: writing rwkv.cpp .bin files is not supported (write gguf, safetensors or pth)",
            path.display()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the readers and writers.

/// Maps `path` read-only. Large tensors are later served as windows of this map.
pub(crate) fn map_file(path: &Path) -> Result<Arc<FileBytes>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::format(path, "file is empty"));
    }
    if usize::try_from(len).is_err() {
        return Err(Error::format(
            path,
            "file is too large to map on this platform",
        ));
    }
    // SAFETY: the map is read-only. Like every mmap-based model loader we assume the file is not
    // truncated or rewritten while mapped; our own writers replace files by rename, never in place.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(FileBytes::Mapped(map)))
}

/// The window `range` of `map` as tensor bytes (the caller has checked the range).
pub(crate) fn mapped(map: &Arc<FileBytes>, range: Range<usize>) -> TensorBytes {
    TensorBytes::Mapped {
        map: Arc::clone(map),
        range,
    }
}

/// The window `range` of `src` as tensor bytes (the caller has checked the range).
pub(crate) fn from_source(src: &Arc<dyn ByteSource>, range: Range<u64>) -> TensorBytes {
    TensorBytes::Source {
        src: Arc::clone(src),
        range,
    }
}

/// `len` bytes of `data` from `start`, keeping a map a map and a source a source. The caller
/// checks bounds.
pub(crate) fn sub_bytes(data: &TensorBytes, start: usize, len: usize) -> TensorBytes {
    match data {
        TensorBytes::Source { src, range } => {
            let s = range.start + start as u64;
            from_source(src, s..s + len as u64)
        }
        TensorBytes::Mapped { map, range } => {
            let s = range.start + start;
            TensorBytes::Mapped {
                map: Arc::clone(map),
                range: s..s + len,
            }
        }
        TensorBytes::Owned(v) => TensorBytes::owned(v[start..start + len].to_vec()),
    }
}

/// A tensor checked against its byte length, with errors naming the file and tensor.
pub(crate) fn make_tensor(
    path: &Path,
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    data: TensorBytes,
) -> Result<Tensor> {
    Tensor::new(dtype, shape, data)
        .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))
}

/// Bytes per element of the plain float types; None for block-quantized types.
pub(crate) fn plain_elem_bytes(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => Some(4),
        DType::F16 | DType::BF16 => Some(2),
        _ => None,
    }
}

/// Values of an F32/F16/BF16 buffer as f32 (None for quantized types).
pub(crate) fn plain_to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    let v = match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// Transposes a row-major `rows × cols` matrix of `elem`-byte values.
pub(crate) fn transpose_bytes(bytes: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let src = (r * cols + c) * elem;
            let dst = (c * rows + r) * elem;
            out[dst..dst + elem].copy_from_slice(&bytes[src..src + elem]);
        }
    }
    out
}

/// A bounds-checked little-endian reader over file bytes; errors name the file and offset.
pub(crate) struct ByteReader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(path: &'a Path, buf: &'a [u8]) -> Self {
        ByteReader { path, buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn err(&self, what: impl Into<String>) -> Error {
        Error::format(self.path, what)
    }

    /// The next `n` bytes (`n` straight from the file, so u64) or a truncation error.
    pub fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let rem = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= rem => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {rem} left",
                self.pos
            ))),
        }
    }
}

/// Bounds-checked little-endian reads of a file header, from bytes in memory ([`ByteReader`]) or
/// streamed from a [`ByteSource`] ([`SourceReader`]), so one parser serves both.
pub(crate) trait HeaderRead {
    fn path(&self) -> &Path;
    /// Offset of the next byte in the file.
    fn offset(&self) -> u64;
    /// Bytes still readable: the rest of the file, or less where the reader caps a header.
    fn left(&self) -> u64;
    /// The next `n` bytes (`n` straight from the file, so u64) or a truncation error.
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]>;

    fn err(&self, what: impl Into<String>) -> Error {
        Error::format(self.path(), what)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
}

impl HeaderRead for ByteReader<'_> {
    fn path(&self) -> &Path {
        self.path
    }
    fn offset(&self) -> u64 {
        self.pos as u64
    }
    fn left(&self) -> u64 {
        self.remaining() as u64
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        self.bytes(n, what)
    }
}

/// Bytes fetched from the source per refill of [`SourceReader`]'s window: small next to any
/// tensor, large enough that a header of many small fields costs few reads.
const SOURCE_WINDOW_BYTES: usize = 64 << 10;

/// [`HeaderRead`] over a [`ByteSource`]: reads the header front to back through a window of
/// about [`SOURCE_WINDOW_BYTES`], never past `header_cap` bytes from the start of the file.
pub(crate) struct SourceReader<'a> {
    path: &'a Path,
    src: &'a dyn ByteSource,
    /// End of the readable part: the file's length or `header_cap`, whichever is smaller.
    end: u64,
    header_cap: u64,
    pos: u64,
    /// Bytes `window_start..window_start + window.len()` of the source.
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> SourceReader<'a> {
    pub fn new(path: &'a Path, src: &'a dyn ByteSource, header_cap: u64) -> Self {
        SourceReader {
            path,
            src,
            end: src.len().min(header_cap),
            header_cap,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The source's total length (the header reader stops earlier).
    pub fn file_len(&self) -> u64 {
        self.src.len()
    }
}

impl HeaderRead for SourceReader<'_> {
    fn path(&self) -> &Path {
        self.path
    }
    fn offset(&self) -> u64 {
        self.pos
    }
    fn left(&self) -> u64 {
        self.end - self.pos
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let left = self.left();
        if n > left {
            let why = if self.end < self.src.len() {
                format!("the header may take at most {} bytes", self.header_cap)
            } else {
                format!("only {left} left")
            };
            let pos = self.pos;
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {pos}, {why}"
            )));
        }
        // n <= left <= header_cap, which fits usize (a cap of a few hundred MiB at most).
        let n_us = n as usize;
        let window_end = self.window_start + self.window.len() as u64;
        if self.pos < self.window_start || self.pos + n > window_end {
            // Keep the unread tail of the old window, read the rest of the new one.
            let want = n_us.max(SOURCE_WINDOW_BYTES).min(left as usize);
            let mut next = Vec::with_capacity(want);
            if self.pos >= self.window_start && self.pos < window_end {
                next.extend_from_slice(&self.window[(self.pos - self.window_start) as usize..]);
            }
            let have = next.len();
            next.resize(want, 0);
            self.src
                .read_at(self.pos + have as u64, &mut next[have..])?;
            self.window = next;
            self.window_start = self.pos;
        }
        let at = (self.pos - self.window_start) as usize;
        self.pos += n;
        Ok(&self.window[at..at + n_us])
    }
}

/// A writer that counts bytes (for alignment padding and offsets).
pub(crate) struct CountingWriter<W: Write> {
    pub inner: W,
    pub written: u64,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, written: 0 }
    }

    /// Writes zero bytes up to the next multiple of `align`.
    pub fn pad_to(&mut self, align: u64) -> std::io::Result<()> {
        let pad = (align - self.written % align) % align;
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = pad as usize;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.write_all(&ZEROS[..n])?;
            left -= n;
        }
        Ok(())
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` atomically: `body` writes `<path>.tmp-<pid>` in the same directory, which is
/// then flushed, fsynced and renamed over `path`. On any error the temporary file is removed and
/// `path` is untouched.
pub(crate) fn write_atomic(
    path: &Path,
    body: impl FnOnce(&mut CountingWriter<BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = CountingWriter::new(BufWriter::with_capacity(1 << 20, file));
        body(&mut w)?;
        let file = w
            .inner
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_parent_dir(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Best effort: makes the rename durable (directories cannot be opened for sync on Windows).
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// I/O errors while writing name the file being written.
pub(crate) fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_magic_bytes() {
        let p = Path::new("x");
        assert_eq!(
            detect_bytes(p, b"GGUF\x03\0\0\0", 100).unwrap(),
            Format::Gguf
        );
        assert_eq!(
            detect_bytes(p, b"PK\x03\x04abcd", 100).unwrap(),
            Format::Pth
        );
        assert_eq!(
            detect_bytes(p, b"fmgg\x64\0\0\0", 100).unwrap(),
            Format::RwkvCpp
        );
        let mut st = 10u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert_eq!(detect_bytes(p, &st, 18).unwrap(), Format::Safetensors);
        // The header length must fit in the file.
        assert!(detect_bytes(p, &st, 17).is_err());
        let e = detect_bytes(p, b"\x80\x02}q\0(X", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("legacy"), "{e}");
        let e = detect_bytes(p, b"hello wor", 100).unwrap_err().to_string();
        assert!(
            e.contains("unknown model format") && e.contains("68 65"),
            "{e}"
        );
    }

    #[test]
    fn format_names_and_extensions() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(
            Format::from_extension(Path::new("a/b.SafeTensors")),
            Some(Format::Safetensors)
        );
        assert_eq!(
            Format::from_extension(Path::new("m.st")),
            Some(Format::Safetensors)
        );
        assert_eq!(
            Format::from_extension(Path::new("m.pth")),
            Some(Format::Pth)
        );
        assert_eq!(
            Format::from_extension(Path::new("m.gguf")),
            Some(Format::Gguf)
        );
        assert_eq!(
            Format::from_extension(Path::new("m.bin")),
            Some(Format::RwkvCpp)
        );
        assert_eq!(Format::from_extension(Path::new("m.txt")), None);
        assert_eq!(Format::from_extension(Path::new("m")), None);
    }

    #[test]
    fn chunked_conversion_matches_one_piece() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let vals: Vec<f32> = (0..10 * 64)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let t = Tensor::from_f32(vec![10, 64], &vals).unwrap();
        let p = Path::new("x");
        let whole = convert_tensor_chunked(p, "w", &t, DType::Q8_0, 1 << 20).unwrap();
        let pieces = convert_tensor_chunked(p, "w", &t, DType::Q8_0, 3 * 64).unwrap();
        assert_eq!(whole.dtype, DType::Q8_0);
        assert_eq!(whole.data.as_slice().len(), 10 * 2 * 34);
        assert_eq!(whole.data.as_slice(), pieces.data.as_slice());
        let e = convert_tensor_chunked(p, "w", &t, DType::Q4K, 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot convert tensor 'w' to q4k"), "{e}");
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // 2×3 of u16 values 0..6 → 3×2.
        let src: Vec<u8> = (0u16..6).flat_map(|v| v.to_le_bytes()).collect();
        let t = transpose_bytes(&src, 2, 3, 2);
        let vals: Vec<u16> = t
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(vals, vec![0, 3, 1, 4, 2, 5]);
    }
}
