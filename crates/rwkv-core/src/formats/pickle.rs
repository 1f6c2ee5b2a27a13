//! A restricted unpickler for PyTorch state dicts: it never executes anything. It understands
//! the opcodes `torch.save` emits (protocols 2-5) and only the globals a state dict needs
//! (OrderedDict, tensor rebuild functions, storage types); any other global is an error. Values
//! are immutable and reference-counted; nesting depth, memo size and copying work are capped so a
//! hostile pickle cannot exhaust the stack or memory. Also a writer for the same subset.
//!
//! (Why one file of ~900 lines: the reader, its caps and the writer share one opcode table and
//! must change together; split, each half would be unreadable without the other.)

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// State dicts nest a handful of levels (dict → tensor args → shape tuple); 64 is far beyond
/// that and keeps recursive drops and walks shallow.
const MAX_DEPTH: u16 = 64;
/// Memo entries: a large state dict uses about ten per tensor; 4M is far beyond any model.
const MAX_MEMO: usize = 1 << 22;
/// Stack items: bounded by the pickle's size anyway, capped to fail fast on junk.
const MAX_STACK: usize = 1 << 24;
/// Elements copied when a shared list/dict is modified (copy-on-write): bounds quadratic work.
const MAX_COPY_WORK: u64 = 1 << 26;
/// Copied elements allowed per byte of pickle. Copies can stay alive (on the stack, in the
/// memo), so a fixed cap alone let a 30 KB pickle hold ~800 MB; torch.save's pickles copy a
/// state dict once per 1000-item SETITEMS batch, far below one element per byte.
const COPY_WORK_PER_BYTE: u64 = 4;
/// Longest module/name line of a GLOBAL opcode.
const MAX_GLOBAL_LINE: usize = 256;

/// A torch storage class: its name, element type and element size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StorageKind {
    pub name: &'static str,
    pub dtype: Option<DType>,
    pub elem_bytes: usize,
}

const STORAGE_KINDS: [StorageKind; 10] = [
    StorageKind {
        name: "FloatStorage",
        dtype: Some(DType::F32),
        elem_bytes: 4,
    },
    StorageKind {
        name: "HalfStorage",
        dtype: Some(DType::F16),
        elem_bytes: 2,
    },
    StorageKind {
        name: "BFloat16Storage",
        dtype: Some(DType::BF16),
        elem_bytes: 2,
    },
    StorageKind {
        name: "DoubleStorage",
        dtype: None,
        elem_bytes: 8,
    },
    StorageKind {
        name: "LongStorage",
        dtype: None,
        elem_bytes: 8,
    },
    StorageKind {
        name: "IntStorage",
        dtype: None,
        elem_bytes: 4,
    },
    StorageKind {
        name: "ShortStorage",
        dtype: None,
        elem_bytes: 2,
    },
    StorageKind {
        name: "CharStorage",
        dtype: None,
        elem_bytes: 1,
    },
    StorageKind {
        name: "ByteStorage",
        dtype: None,
        elem_bytes: 1,
    },
    StorageKind {
        name: "BoolStorage",
        dtype: None,
        elem_bytes: 1,
    },
];

/// The globals a state dict may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildFromTypeV2,
    TorchTensor,
    Parameter,
    Storage(StorageKind),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "Tensor") => Global::TorchTensor,
        ("torch.nn.parameter", "Parameter") => Global::Parameter,
        ("torch", n) => Global::Storage(*STORAGE_KINDS.iter().find(|k| k.name == n)?),
        _ => return None,
    })
}

/// A persistent storage reference: `('storage', kind, key, location, numel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub kind: StorageKind,
    pub key: String,
    pub numel: u64,
}

/// A tensor view of a storage, as `_rebuild_tensor_v2` describes it (offset in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<V>),
    List(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// A value with its nesting depth (1 for scalars).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Value,
    depth: u16,
}

pub(crate) type V = Rc<Node>;

impl Node {
    fn leaf(value: Value) -> V {
        Rc::new(Node { value, depth: 1 })
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float => "float",
        Value::Str(_) => "str",
        Value::Bytes => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "tensor",
    }
}

struct Machine<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
    copy_work: u64,
}

impl<'a> Machine<'a> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::format(self.path, format!("data.pkl: {what}"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() - self.pos {
            return Err(self.err(format!(
                "truncated at offset {} (needs {n} more bytes)",
                self.pos
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn len_arg(&mut self, n: usize) -> Result<usize> {
        let len = self.uint(n)?;
        usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.bytes.len() - self.pos)
            .ok_or_else(|| {
                self.err(format!(
                    "length {len} at offset {} runs past the end",
                    self.pos
                ))
            })
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .take(MAX_GLOBAL_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("GLOBAL name is unterminated or too long"))?;
        let s =
            std::str::from_utf8(&rest[..end]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: V) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack too large"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn push_leaf(&mut self, v: Value) -> Result<()> {
        self.push(Node::leaf(v))
    }

    fn pop(&mut self) -> Result<V> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(format!("stack underflow at offset {}", self.pos)));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<V>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err(format!("no MARK before offset {}", self.pos)))?;
        Ok(self.stack.split_off(mark))
    }

    fn container(&self, value: Value, children: impl Iterator<Item = u16>) -> Result<V> {
        let depth = children.max().unwrap_or(0) + 1;
        if depth > MAX_DEPTH {
            return Err(self.err(format!("values nest deeper than {MAX_DEPTH}")));
        }
        Ok(Rc::new(Node { value, depth }))
    }

    fn tuple(&self, items: Vec<V>) -> Result<V> {
        let depths: Vec<u16> = items.iter().map(|i| i.depth).collect();
        self.container(Value::Tuple(items), depths.into_iter())
    }

    /// The top of the stack, made unique (copied if the memo shares it) for in-place update.
    fn top_mut(&mut self) -> Result<&mut Node> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        let top = self
            .stack
            .last_mut()
            .ok_or_else(|| Error::format(self.path, "stack underflow"))?;
        if Rc::strong_count(top) > 1 {
            let n = match &top.value {
                Value::List(v) => v.len() as u64,
                Value::Dict(v) => v.len() as u64,
                _ => 1,
            };
            self.copy_work += n;
            let budget = (self.bytes.len() as u64)
                .saturating_mul(COPY_WORK_PER_BYTE)
                .min(MAX_COPY_WORK);
            if self.copy_work > budget {
                return Err(Error::format(
                    self.path,
                    "data.pkl: too much copying (hostile pickle?)",
                ));
            }
        }
        Ok(Rc::make_mut(top))
    }

    fn append(&mut self, items: Vec<V>) -> Result<()> {
        let path = self.path;
        let node = self.top_mut()?;
        let Value::List(list) = &mut node.value else {
            return Err(Error::format(
                path,
                format!("data.pkl: APPEND to a {}", type_name(&node.value)),
            ));
        };
        let d = items.iter().map(|i| i.depth).max().unwrap_or(0) + 1;
        list.extend(items);
        node.depth = node.depth.max(d);
        if node.depth > MAX_DEPTH {
            return Err(Error::format(
                path,
                format!("data.pkl: values nest deeper than {MAX_DEPTH}"),
            ));
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<V>) -> Result<()> {
        if items.len() % 2 != 0 {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        let path = self.path;
        let node = self.top_mut()?;
        let Value::Dict(dict) = &mut node.value else {
            return Err(Error::format(
                path,
                format!("data.pkl: SETITEM on a {}", type_name(&node.value)),
            ));
        };
        let mut d = 0;
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d = d.max(k.depth).max(v.depth);
            dict.push((k, v));
        }
        node.depth = node.depth.max(d + 1);
        if node.depth > MAX_DEPTH {
            return Err(Error::format(
                path,
                format!("data.pkl: values nest deeper than {MAX_DEPTH}"),
            ));
        }
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("memoize with an empty stack"))?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(self.err("memo too large"));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err(format!("memo key {key} is not set")))?;
        self.push(v)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        match resolve_global(module, name) {
            Some(g) => self.push_leaf(Value::Global(g)),
            None => Err(Error::format(
                self.path,
                format!(
                    "global '{}.{}' is not allowed",
                    module.escape_debug(),
                    name.escape_debug()
                ),
            )),
        }
    }

    fn int_of(&self, v: &V, what: &str) -> Result<i64> {
        match v.value {
            Value::Int(i) => Ok(i),
            Value::Bool(b) => Ok(b as i64),
            ref other => Err(self.err(format!("{what} is a {}, expected int", type_name(other)))),
        }
    }

    fn sizes(&self, v: &V, what: &str) -> Result<Vec<usize>> {
        let Value::Tuple(items) = &v.value else {
            return Err(self.err(format!(
                "{what} is a {}, expected tuple",
                type_name(&v.value)
            )));
        };
        items
            .iter()
            .map(|i| {
                let x = self.int_of(i, what)?;
                usize::try_from(x).map_err(|_| self.err(format!("{what} has negative entry {x}")))
            })
            .collect()
    }

    fn rebuild_tensor(&self, args: &[V]) -> Result<Value> {
        if args.len() < 4 {
            return Err(self.err("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)"));
        }
        let Value::Storage(storage) = &args[0].value else {
            return Err(self.err(format!(
                "_rebuild_tensor_v2 storage is a {}",
                type_name(&args[0].value)
            )));
        };
        let offset = self.int_of(&args[1], "storage offset")?;
        let offset = u64::try_from(offset)
            .map_err(|_| self.err(format!("negative storage offset {offset}")))?;
        let shape = self.sizes(&args[2], "tensor size")?;
        let stride = self.sizes(&args[3], "tensor stride")?;
        if shape.len() != stride.len() {
            return Err(self.err("tensor size and stride differ in length"));
        }
        Ok(Value::Tensor(TensorRef {
            storage: storage.clone(),
            offset,
            shape,
            stride,
        }))
    }

    fn call(&self, f: Global, args: &[V]) -> Result<Value> {
        match f {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Global::RebuildTensorV2 => self.rebuild_tensor(args),
            Global::RebuildParameter => match args.first().map(|a| &a.value) {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter expects a tensor")),
            },
            Global::RebuildFromTypeV2 => {
                // (func, new_type, args, state): the type only wraps a plain tensor.
                let (Some(func), Some(ty), Some(inner)) = (args.first(), args.get(1), args.get(2))
                else {
                    return Err(self.err("_rebuild_from_type_v2 needs (func, type, args, state)"));
                };
                let (
                    Value::Global(func),
                    Value::Global(Global::TorchTensor | Global::Parameter),
                    Value::Tuple(inner),
                ) = (&func.value, &ty.value, &inner.value)
                else {
                    return Err(self.err("_rebuild_from_type_v2 with unexpected arguments"));
                };
                match func {
                    Global::RebuildTensorV2 | Global::RebuildParameter => self.call(*func, inner),
                    _ => Err(self.err("_rebuild_from_type_v2 of an unexpected function")),
                }
            }
            other => Err(self.err(format!("{other:?} cannot be called"))),
        }
    }

    fn run(&mut self) -> Result<V> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let proto = self.take(1)?[0];
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto} is not supported")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err("too many marks"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.push_leaf(Value::Int(v.into()))?
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.uint(1)?
                    } else {
                        self.uint(4)?
                    };
                    if n > 8 {
                        return Err(self.err(format!("integer of {n} bytes is too large")));
                    }
                    let b = self.take(n as usize)?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n as usize - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n); // sign-extend two's complement
                    }
                    self.push_leaf(Value::Int(v))?
                }
                b'G' => {
                    self.take(8)?; // a float's value is never needed in a state dict
                    self.push_leaf(Value::Float)?
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.len_arg(4)?,
                        0x8c => self.len_arg(1)?,
                        _ => self.len_arg(8)?,
                    };
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))?;
                    self.push_leaf(Value::Str(s.to_string()))?
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'T' | b'B' => self.len_arg(4)?,
                        b'U' | b'C' => self.len_arg(1)?,
                        _ => self.len_arg(8)?,
                    };
                    self.take(n)?;
                    self.push_leaf(Value::Bytes)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.tuple(items)?;
                    self.push(t)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let t = self.tuple(items)?;
                    self.push(t)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let depths: Vec<u16> = items.iter().map(|i| i.depth).collect();
                    let l = self.container(Value::List(items), depths.into_iter())?;
                    self.push(l)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_leaf(Value::Dict(Vec::new()))?;
                    self.set_items(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'q' => {
                    let k = self.uint(1)? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.uint(4)? as u32;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k =
                        u32::try_from(self.memo.len()).map_err(|_| self.err("memo too large"))?;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.uint(1)? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.uint(4)? as u32;
                    self.memo_get(k)?
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.err("DUP on an empty stack"))?;
                    self.push(top)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module.value, &name.value) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?
                        }
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let Value::Global(g) = f.value else {
                        return Err(self.err(format!("REDUCE of a {}", type_name(&f.value))));
                    };
                    let Value::Tuple(args) = &args.value else {
                        return Err(self.err("REDUCE arguments are not a tuple"));
                    };
                    let v = self.call(g, args)?;
                    self.push_leaf(v)?
                }
                b'b' => {
                    // BUILD: state for an OrderedDict (its _metadata) or a tensor; not needed.
                    let _state = self.pop()?;
                    let obj = self.pop()?;
                    match obj.value {
                        Value::Dict(_) | Value::Tensor(_) => self.push(obj)?,
                        ref other => {
                            return Err(self.err(format!("BUILD on a {}", type_name(other))))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(&pid)?;
                    self.push_leaf(v)?
                }
                _ => {
                    return Err(self.err(format!(
                        "unsupported pickle opcode 0x{op:02x} at offset {at}"
                    )));
                }
            }
        }
    }

    fn persistent(&self, pid: &V) -> Result<Value> {
        let Value::Tuple(t) = &pid.value else {
            return Err(self.err("persistent id is not a tuple"));
        };
        match t.iter().map(|v| &v.value).collect::<Vec<_>>().as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), Value::Str(_location), numel]
                if tag == "storage" =>
            {
                let numel = match numel {
                    Value::Int(n) => {
                        u64::try_from(*n).map_err(|_| self.err("negative storage size"))?
                    }
                    _ => return Err(self.err("storage size is not an int")),
                };
                Ok(Value::Storage(StorageRef {
                    kind: *kind,
                    key: key.clone(),
                    numel,
                }))
            }
            _ => {
                Err(self
                    .err("persistent id is not ('storage', torch.XStorage, key, location, numel)"))
            }
        }
    }
}

/// Runs the restricted unpickler over `bytes` and returns the pickled object.
pub(crate) fn unpickle(path: &Path, bytes: &[u8]) -> Result<V> {
    let mut m = Machine {
        path,
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copy_work: 0,
    };
    m.run()
}

// ---------------------------------------------------------------------------------------------
// Writer (protocol 2, what torch.save emits for a state dict).

/// One tensor for [`write_state_dict`]: its storage is the whole tensor (offset 0, contiguous).
pub(crate) struct TensorEntry<'a> {
    pub name: &'a str,
    pub storage: &'static str,
    pub key: String,
    pub shape: &'a [usize],
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    if s.len() < 256 {
        out.push(0x8c);
        out.push(s.len() as u8);
    } else {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn put_int(out: &mut Vec<u8>, v: u64) {
    if v < 256 {
        out.extend_from_slice(&[b'K', v as u8]);
    } else if v < 65536 {
        out.push(b'M');
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < (1 << 31) {
        out.push(b'J');
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        // LONG1, 8 bytes two's complement (positive, fits in i64 for any real size).
        out.extend_from_slice(&[0x8a, 8]);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_tuple(out: &mut Vec<u8>, vals: &[usize]) {
    out.push(b'(');
    for &v in vals {
        put_int(out, v as u64);
    }
    out.push(b't');
}

/// The pickle of an `OrderedDict` of tensors, each backed by its own storage `key`.
pub(crate) fn write_state_dict(tensors: &[TensorEntry]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    out.extend_from_slice(b"ccollections\nOrderedDict\n)R");
    out.push(b'(');
    for t in tensors {
        put_str(&mut out, t.name);
        out.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
        out.push(b'(');
        put_str(&mut out, "storage");
        out.extend_from_slice(format!("ctorch\n{}\n", t.storage).as_bytes());
        put_str(&mut out, &t.key);
        put_str(&mut out, "cpu");
        put_int(&mut out, t.shape.iter().product::<usize>() as u64);
        out.extend_from_slice(b"tQ");
        put_int(&mut out, 0);
        put_tuple(&mut out, t.shape);
        let mut stride = vec![1usize; t.shape.len()];
        for i in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * t.shape[i + 1];
        }
        put_tuple(&mut out, &stride);
        out.push(0x89); // requires_grad False
        out.extend_from_slice(b"ccollections\nOrderedDict\n)R"); // backward hooks
        out.extend_from_slice(b"tR");
    }
    out.extend_from_slice(b"u.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: &[u8]) -> Result<V> {
        unpickle(Path::new("m.pth"), b)
    }

    #[test]
    fn writer_output_reads_back() {
        let shape = [3usize, 5];
        let p = write_state_dict(&[
            TensorEntry {
                name: "a.weight",
                storage: "FloatStorage",
                key: "0".into(),
                shape: &shape,
            },
            TensorEntry {
                name: "b",
                storage: "BFloat16Storage",
                key: "1".into(),
                shape: &[7],
            },
        ]);
        let v = run(&p).unwrap();
        let Value::Dict(items) = &v.value else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 2);
        let Value::Tensor(t) = &items[0].1.value else {
            panic!("not a tensor")
        };
        assert_eq!(t.shape, vec![3, 5]);
        assert_eq!(t.stride, vec![5, 1]);
        assert_eq!(t.storage.numel, 15);
        assert_eq!(t.storage.kind.dtype, Some(DType::F32));
        let Value::Tensor(t) = &items[1].1.value else {
            panic!("not a tensor")
        };
        assert_eq!(t.storage.kind.dtype, Some(DType::BF16));
        assert_eq!(t.storage.key, "1");
    }

    #[test]
    fn disallowed_global_is_named() {
        let e = run(b"\x80\x02cos\nsystem\nq\x00.").unwrap_err().to_string();
        assert!(
            e.contains("m.pth") && e.contains("global 'os.system' is not allowed"),
            "{e}"
        );
        let e = run(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.")
            .unwrap_err()
            .to_string();
        assert!(e.contains("global 'builtins.eval' is not allowed"), "{e}");
    }

    #[test]
    fn deep_nesting_and_bad_memo_are_errors() {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85u8, 10_000)); // TUPLE1 × 10000
        p.push(b'.');
        assert!(run(&p).unwrap_err().to_string().contains("deeper"));
        assert!(run(b"\x80\x02h\x05.")
            .unwrap_err()
            .to_string()
            .contains("memo key 5"));
        assert!(run(b"\x80\x02t.").is_err());
        assert!(run(b"\x80\x02").is_err());
        assert!(run(b"\x80\x02\xff")
            .unwrap_err()
            .to_string()
            .contains("opcode 0xff"));
    }

    #[test]
    fn negative_long1_sign_extends() {
        let v = run(b"\x8a\x02\xfe\xff.").unwrap();
        assert!(matches!(v.value, Value::Int(-2)));
    }
}
