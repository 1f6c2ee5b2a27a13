//! The GGUF container (layout: ../shared/docs/gguf-formats.md §1): header, metadata key-values
//! and tensor infos, every count, length and offset validated against the file before anything
//! is allocated. Knows nothing of RWKV; [`super::names`] maps the tensors onto the model.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::Result;
use crate::formats::{from_source, map_file, mapped, ByteReader, HeaderRead, SourceReader};
use crate::model::{ByteSource, FileBytes, Model, TensorBytes};

/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays of arrays deeper than this are refused: real files nest at most once, and the limit
/// bounds the parser's recursion.
const MAX_ARRAY_NESTING: usize = 8;
/// The spec limits keys to 65535 bytes.
const MAX_KEY_BYTES: u64 = 65535;
/// ggml's own limit is 64 bytes; allow some slack for other writers but keep names small.
const MAX_TENSOR_NAME_BYTES: u64 = 1024;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Alignment above 1 GiB is certainly corrupt (and would make padding arithmetic absurd).
const MAX_ALIGNMENT: u64 = 1 << 30;
/// Largest header (metadata and tensor infos, everything before the data) read from a
/// [`ByteSource`]. The biggest real ones, a 256k-token vocabulary with its merges, take a few
/// tens of MB; parsed, a header takes several times its bytes of (wasm) memory, whose whole
/// budget streaming exists to spare, so anything larger is refused as corrupt or hostile.
pub const MAX_STREAMED_HEADER_BYTES: u64 = 256 << 20;
/// Entries reserved up front for metadata and tensor infos; counts from the file only bound
/// what the file can hold, and a small reserve keeps a bad count from allocating it all.
const RESERVE_ENTRIES: usize = 4096;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, stored typed (a 32000-entry i32 array is one `Vec<i32>`).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufValue {
    /// Any non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// GGUF value type id.
    pub(super) fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::Str(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::Str(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element type name as GGUF calls it.
    pub fn elem_type_name(&self) -> &'static str {
        VALUE_TYPE_NAMES[self.elem_type_id() as usize]
    }

    pub(super) fn elem_type_id(&self) -> u32 {
        match self {
            GgufArray::U8(_) => 0,
            GgufArray::I8(_) => 1,
            GgufArray::U16(_) => 2,
            GgufArray::I16(_) => 3,
            GgufArray::U32(_) => 4,
            GgufArray::I32(_) => 5,
            GgufArray::F32(_) => 6,
            GgufArray::Bool(_) => 7,
            GgufArray::Str(_) => 8,
            GgufArray::Array(_) => 9,
            GgufArray::U64(_) => 10,
            GgufArray::I64(_) => 11,
            GgufArray::F64(_) => 12,
        }
    }

    /// The first `n` elements, printed.
    fn head(&self, n: usize) -> Vec<String> {
        fn h<T: fmt::Debug>(v: &[T], n: usize) -> Vec<String> {
            v.iter().take(n).map(|x| format!("{x:?}")).collect()
        }
        match self {
            GgufArray::U8(v) => h(v, n),
            GgufArray::I8(v) => h(v, n),
            GgufArray::U16(v) => h(v, n),
            GgufArray::I16(v) => h(v, n),
            GgufArray::U32(v) => h(v, n),
            GgufArray::I32(v) => h(v, n),
            GgufArray::F32(v) => h(v, n),
            GgufArray::Bool(v) => h(v, n),
            GgufArray::Str(v) => v.iter().take(n).map(|s| quote_short(s)).collect(),
            GgufArray::Array(v) => v
                .iter()
                .take(n)
                .map(|a| format!("[{}; {}]", a.elem_type_name(), a.len()))
                .collect(),
            GgufArray::U64(v) => h(v, n),
            GgufArray::I64(v) => h(v, n),
            GgufArray::F64(v) => h(v, n),
        }
    }
}

const VALUE_TYPE_NAMES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

fn quote_short(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{:?}…", cut)
    } else {
        format!("{s:?}")
    }
}

/// One-line rendering for `rwkv info` (long strings and arrays are abbreviated).
impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::U8(v) => write!(f, "{v}"),
            GgufValue::I8(v) => write!(f, "{v}"),
            GgufValue::U16(v) => write!(f, "{v}"),
            GgufValue::I16(v) => write!(f, "{v}"),
            GgufValue::U32(v) => write!(f, "{v}"),
            GgufValue::I32(v) => write!(f, "{v}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::Bool(v) => write!(f, "{v}"),
            GgufValue::Str(s) => f.write_str(&quote_short(s)),
            GgufValue::Array(a) => {
                let head = a.head(4);
                let more = if a.len() > head.len() { ", …" } else { "" };
                write!(
                    f,
                    "[{}; {}] [{}{more}]",
                    a.elem_type_name(),
                    a.len(),
                    head.join(", ")
                )
            }
            GgufValue::U64(v) => write!(f, "{v}"),
            GgufValue::I64(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
        }
    }
}

/// Block geometry of a ggml type id: (name, values per block, bytes per block). Includes types
/// we cannot run, so that their files still parse for `rwkv info`.
fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

/// One tensor's entry in the tensor-info section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (innermost); torch shape is the reverse.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// ggml's name of the type ("Q4_K", ...).
    pub type_name: &'static str,
    /// The type as a [`DType`], when we can run it.
    pub dtype: Option<DType>,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Row-major shape, outermost first (torch order).
    pub fn shape(&self) -> Vec<usize> {
        // Each dim was checked to fit usize while parsing (the byte count does).
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Where a [`GgufFile`]'s tensor data lies.
enum Backing {
    Map(Arc<FileBytes>),
    Source(Arc<dyn ByteSource>),
}

/// A parsed GGUF file: header, metadata, tensor infos, and the memory map (or byte source) they
/// point into.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_start: u64,
    pub kv: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    backing: Backing,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("kv", &self.kv.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`, validating all of it (but reading no tensor data).
    pub fn open(path: &Path) -> Result<GgufFile> {
        let map = map_file(path)?;
        parse(path, map)
    }

    /// Parses the header of a GGUF read through `src` (at most [`MAX_STREAMED_HEADER_BYTES`],
    /// in bounded reads); tensor data stays in the source.
    pub fn open_source(path: &Path, src: Arc<dyn ByteSource>) -> Result<GgufFile> {
        let mut r = SourceReader::new(path, src.as_ref(), MAX_STREAMED_HEADER_BYTES);
        let file_len = r.file_len();
        let header = parse_header(&mut r, file_len)?;
        Ok(header.into_file(path, Backing::Source(src)))
    }

    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of `t`: a window of the map or of the source (ranges were checked at parse
    /// time, against a mapped file's length, which fits usize).
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> TensorBytes {
        let start = self.data_start + t.offset;
        match &self.backing {
            Backing::Map(map) => mapped(map, start as usize..(start + t.n_bytes) as usize),
            Backing::Source(src) => from_source(src, start..start + t.n_bytes),
        }
    }

    /// The file's total size in bytes.
    pub fn file_len(&self) -> u64 {
        match &self.backing {
            Backing::Map(map) => map.len() as u64,
            Backing::Source(src) => src.len(),
        }
    }

    /// Reads the llama.cpp `rwkv7` tensors into the canonical model.
    pub fn to_model(&self) -> Result<Model> {
        super::names::to_model(self)
    }
}

fn read_string<R: HeaderRead>(r: &mut R, max: u64, what: &str) -> Result<String> {
    let n = r.u64(what)?;
    if n > max {
        return Err(r.err(format!("{what} is {n} bytes long, the limit is {max}")));
    }
    let b = r.take(n, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| r.err(format!("{what} is not valid UTF-8")))
}

/// Least bytes one element of value type `ty` takes in a file.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

fn read_value<R: HeaderRead>(r: &mut R, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
    let what = format!("value of '{key}'");
    Ok(match ty {
        0 => GgufValue::U8(r.u8(&what)?),
        1 => GgufValue::I8(r.u8(&what)? as i8),
        2 => GgufValue::U16(r.u16(&what)?),
        3 => GgufValue::I16(r.u16(&what)? as i16),
        4 => GgufValue::U32(r.u32(&what)?),
        5 => GgufValue::I32(r.i32(&what)?),
        6 => GgufValue::F32(f32::from_bits(r.u32(&what)?)),
        7 => GgufValue::Bool(read_bool(r, &what)?),
        8 => GgufValue::Str(read_value_string(r, &what)?),
        9 => GgufValue::Array(read_array(r, key, depth + 1)?),
        10 => GgufValue::U64(r.u64(&what)?),
        11 => GgufValue::I64(r.i64(&what)?),
        12 => GgufValue::F64(f64::from_bits(r.u64(&what)?)),
        _ => return Err(r.err(format!("'{key}' has unknown value type {ty}"))),
    })
}

fn read_bool<R: HeaderRead>(r: &mut R, what: &str) -> Result<bool> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(r.err(format!("{what}: bool byte is {b}, not 0 or 1"))),
    }
}

/// String values may come from tokenizers that wrote raw bytes; keep them readable.
fn read_value_string<R: HeaderRead>(r: &mut R, what: &str) -> Result<String> {
    let n = r.u64(what)?;
    let b = r.take(n, what)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn read_array<R: HeaderRead>(r: &mut R, key: &str, depth: usize) -> Result<GgufArray> {
    if depth > MAX_ARRAY_NESTING {
        return Err(r.err(format!(
            "'{key}' nests arrays deeper than {MAX_ARRAY_NESTING}"
        )));
    }
    let what = format!("array '{key}'");
    let ty = r.u32(&what)?;
    let count = r.u64(&what)?;
    let min = min_value_bytes(ty)
        .ok_or_else(|| r.err(format!("'{key}' has unknown array element type {ty}")))?;
    if count > r.left() / min {
        return Err(r.err(format!(
            "array '{key}' claims {count} elements, more than the {} bytes left can hold",
            r.left()
        )));
    }
    let n = count as usize;
    macro_rules! many {
        ($variant:ident, $read:expr) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push($read);
            }
            GgufArray::$variant(v)
        }};
    }
    Ok(match ty {
        0 => many!(U8, r.u8(&what)?),
        1 => many!(I8, r.u8(&what)? as i8),
        2 => many!(U16, r.u16(&what)?),
        3 => many!(I16, r.u16(&what)? as i16),
        4 => many!(U32, r.u32(&what)?),
        5 => many!(I32, r.i32(&what)?),
        6 => many!(F32, f32::from_bits(r.u32(&what)?)),
        7 => many!(Bool, read_bool(r, &what)?),
        8 => many!(Str, read_value_string(r, &what)?),
        9 => many!(Array, read_array(r, key, depth + 1)?),
        10 => many!(U64, r.u64(&what)?),
        11 => many!(I64, r.i64(&what)?),
        _ => many!(F64, f64::from_bits(r.u64(&what)?)),
    })
}

pub(crate) fn parse(path: &Path, map: Arc<FileBytes>) -> Result<GgufFile> {
    let mut r = ByteReader::new(path, &map);
    let header = parse_header(&mut r, map.len() as u64)?;
    Ok(header.into_file(path, Backing::Map(map)))
}

/// What [`parse_header`] reads: a [`GgufFile`] without its backing.
struct Header {
    version: u32,
    alignment: u64,
    data_start: u64,
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
}

impl Header {
    fn into_file(self, path: &Path, backing: Backing) -> GgufFile {
        GgufFile {
            path: path.to_path_buf(),
            version: self.version,
            alignment: self.alignment,
            data_start: self.data_start,
            kv: self.kv,
            tensors: self.tensors,
            backing,
        }
    }
}

/// Reads and validates everything before the tensor data, and checks every tensor's data lies
/// inside the `file_len` bytes of the file without overlapping another.
fn parse_header<R: HeaderRead>(r: &mut R, file_len: u64) -> Result<Header> {
    let magic = r.array::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(r.err(format!("not a GGUF file (magic {magic:02x?})")));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return Err(r.err("GGUF v1 is not supported (only v2 and v3); re-convert the model")),
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(r.err("big-endian GGUF files are not supported"));
        }
        v => return Err(r.err(format!("unsupported GGUF version {v} (only v2 and v3)"))),
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata count")?;
    // A key-value pair takes at least 13 bytes (empty key, type, 1-byte value).
    if kv_count > r.left() / 13 {
        return Err(r.err(format!(
            "metadata count {kv_count} is larger than the file can hold"
        )));
    }
    let mut kv = Vec::with_capacity((kv_count as usize).min(RESERVE_ENTRIES));
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let key = read_string(r, MAX_KEY_BYTES, "metadata key")?;
        let ty = r.u32("metadata value type")?;
        let value = read_value(r, ty, &key, 0)?;
        if !keys.insert(key.clone()) {
            return Err(r.err(format!("metadata key '{key}' appears twice")));
        }
        kv.push((key, value));
    }
    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            _ => {
                return Err(r.err(format!(
                    "general.alignment {v} is not a power of two up to 1 GiB"
                )))
            }
        },
    };
    // A tensor info takes at least 32 bytes (empty name, 1 dim, type, offset).
    if tensor_count > r.left() / 32 {
        return Err(r.err(format!(
            "tensor count {tensor_count} is larger than the file can hold"
        )));
    }
    let mut tensors = Vec::with_capacity((tensor_count as usize).min(RESERVE_ENTRIES));
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let name = read_string(r, MAX_TENSOR_NAME_BYTES, "tensor name")?;
        let info = read_tensor_info(r, name, alignment)?;
        if !names.insert(info.name.clone()) {
            return Err(r.err(format!("tensor '{}' appears twice", info.name)));
        }
        tensors.push(info);
    }
    let info_end = r.offset();
    let data_start = info_end.div_ceil(alignment) * alignment;
    for t in &tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(r.err(format!(
                    "tensor '{}' data (offset {}, {} bytes) runs past the end of the file ({file_len} bytes, data at {data_start})",
                    t.name, t.offset, t.n_bytes
                )))
            }
        }
    }
    let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.n_bytes));
    for w in by_offset.windows(2) {
        if w[1].offset < w[0].offset + w[0].n_bytes {
            return Err(r.err(format!(
                "tensors '{}' and '{}' overlap",
                w[0].name, w[1].name
            )));
        }
    }
    Ok(Header {
        version,
        alignment,
        data_start,
        kv,
        tensors,
    })
}

fn read_tensor_info<R: HeaderRead>(
    r: &mut R,
    name: String,
    alignment: u64,
) -> Result<GgufTensorInfo> {
    let n_dims = r.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(r.err(format!(
            "tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64("tensor dimension")?);
    }
    let ggml_type_id = r.u32("tensor type")?;
    let offset = r.u64("tensor offset")?;
    let (type_name, block_elems, block_bytes) = ggml_type(ggml_type_id).ok_or_else(|| {
        r.err(format!(
            "tensor '{name}' has unknown ggml type {ggml_type_id}"
        ))
    })?;
    if dims[0] % block_elems != 0 {
        return Err(r.err(format!(
            "tensor '{name}' rows of {} values are not whole {type_name} blocks of {block_elems}",
            dims[0]
        )));
    }
    let too_big = || r.err(format!("tensor '{name}' dimensions {dims:?} are too large"));
    let rows = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let n_bytes = (dims[0] / block_elems)
        .checked_mul(block_bytes)
        .and_then(|b| b.checked_mul(rows))
        .filter(|&b| usize::try_from(b).is_ok() && dims.iter().all(|&d| usize::try_from(d).is_ok()))
        .ok_or_else(too_big)?;
    if offset % alignment != 0 {
        return Err(r.err(format!(
            "tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let dtype = DType::from_ggml_id(ggml_type_id);
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type: ggml_type_id,
        type_name,
        dtype,
        offset,
        n_bytes,
    })
}

/// Summary of a GGUF's tensors by type, e.g. {"F16": 9, "F32": 3}, for reports.
pub fn tensor_type_counts(g: &GgufFile) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for t in &g.tensors {
        *m.entry(t.type_name).or_insert(0) += 1;
    }
    m
}
