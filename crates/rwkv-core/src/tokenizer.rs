//! RWKV World tokenizer: greedy longest byte match over the vocabulary.
//!
//! A [`Vocab`] maps ids to byte strings. Encoding walks a byte trie from each position and takes
//! the longest token that is a prefix of the remaining input (O(n · longest token)). Every
//! constructor guarantees all 256 single bytes are tokens, so any byte sequence encodes and
//! `decode(encode(x)) == x`.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest vocabulary file we read. The World vocabulary is ~1.6 MB; the cap stops a wrong path
/// (a model file) from being slurped into memory.
const MAX_VOCAB_FILE_BYTES: u64 = 64 << 20;
/// Largest token id we accept. Real vocabularies stay below 2^18; the cap bounds the id table
/// (24 bytes per id, ~50 MB at the cap) a hostile file can make us allocate.
const MAX_TOKEN_ID: u32 = 1 << 21;
/// Unused ids a vocabulary may leave beyond twice its token count (see `Vocab::from_entries`).
const MAX_ID_GAP: usize = 256;
/// Ids below this are always allowed, however sparse: the World vocabulary's 65,536 ids cost
/// 1.5 MB of table, a bounded price for small hand-made vocabularies (tests, byte-level models
/// with a few extra tokens) that number their tokens freely.
const ALWAYS_ALLOWED_IDS: usize = 1 << 16;

/// A vocabulary: token id → bytes. Id 0 is the end-of-text token and has no bytes.
#[derive(Clone, Default)]
pub struct Vocab {
    /// `tokens[id]`: the token's bytes; `None` for unused ids. Id 0 is `Some(empty)`.
    tokens: Vec<Option<Vec<u8>>>,
    trie: Trie,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        self.tokens == other.tokens
    }
}

impl Eq for Vocab {}

impl fmt::Debug for Vocab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.tokens.iter().filter(|t| t.is_some()).count();
        write!(f, "Vocab {{ len: {}, used: {used} }}", self.tokens.len())
    }
}

impl Vocab {
    /// Reads `rwkv_vocab_v20230424.txt` (or `.json`), chosen by content: a file whose first
    /// non-blank byte is `{` is JSON (`{"id": "text" | [byte, ...]}`), anything else is the
    /// `ID LITERAL LEN` text format.
    pub fn from_file(path: &Path) -> Result<Vocab> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > MAX_VOCAB_FILE_BYTES {
            return Err(Error::format(
                path,
                format!("{} bytes is too large for a vocabulary", meta.len()),
            ));
        }
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Vocab::from_bytes(path, &data)
    }

    /// [`Vocab::from_file`] for a file already in memory (the browser has no paths); `source`
    /// names it in errors.
    pub fn from_bytes(source: &Path, data: &[u8]) -> Result<Vocab> {
        if data.len() as u64 > MAX_VOCAB_FILE_BYTES {
            return Err(Error::format(
                source,
                format!("{} bytes is too large for a vocabulary", data.len()),
            ));
        }
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        let entries = if first == Some(&b'{') {
            parse_json(source, data)?
        } else {
            parse_txt(source, data)?
        };
        Vocab::from_entries(entries, 0).map_err(|what| Error::format(source, what))
    }

    /// Builds the vocabulary from llama.cpp's rwkv GGUF `tokenizer.ggml.tokens`: `[0]` is the
    /// end-of-text token (its text, "<s>", is ignored), ids 1.. are the inside of Python's
    /// `repr()` of the token bytes (`\n`, `\xe4`, `\'`), `[PAD<i>]` marks unused id `i`.
    pub fn from_gguf_tokens(tokens: &[String]) -> Result<Vocab> {
        let bad = |what: String| Error::format("tokenizer.ggml.tokens", what);
        if tokens.is_empty() {
            return Err(bad("no tokens".into()));
        }
        if tokens.len() > MAX_TOKEN_ID as usize {
            return Err(bad(format!(
                "{} tokens is more than we accept",
                tokens.len()
            )));
        }
        let mut entries = Vec::with_capacity(tokens.len());
        for (id, text) in tokens.iter().enumerate().skip(1) {
            if *text == format!("[PAD{id}]") {
                continue;
            }
            let bytes =
                parse_repr_inner(text).map_err(|e| bad(format!("token {id} {text:?}: {e}")))?;
            entries.push((id as u32, bytes, format!("token {id}")));
        }
        Vocab::from_entries(entries, tokens.len()).map_err(bad)
    }

    /// What llama.cpp's converter writes as `tokenizer.ggml.tokens` for this vocabulary:
    /// "<s>", then `repr(bytes)[2:-1]` per token, "[PAD<i>]" for unused ids.
    pub fn to_gguf_tokens(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.tokens.len().max(1));
        out.push("<s>".to_string());
        for (id, token) in self.tokens.iter().enumerate().skip(1) {
            out.push(match token {
                Some(bytes) => repr_inner(bytes),
                None => format!("[PAD{id}]"),
            });
        }
        out
    }

    /// A byte-level vocabulary of `vocab_size` ids: id = byte + 1 (the same ids World gives its
    /// 256 single-byte tokens), id 0 end of text, ids above 256 unused.
    ///
    /// `vocab_size <= 256` cannot hold that layout; it gives the 256-id vocabulary id = byte
    /// (no end-of-text id) that rwkv.cpp's tiny byte-level test models use.
    pub fn byte_level(vocab_size: usize) -> Vocab {
        let (len, first_id) = if vocab_size <= 256 {
            (256, 0)
        } else {
            (vocab_size, 1)
        };
        let mut tokens = vec![None; len];
        if first_id == 1 {
            tokens[0] = Some(Vec::new());
        }
        for byte in 0..=255u8 {
            tokens[byte as usize + first_id] = Some(vec![byte]);
        }
        let trie = Trie::build(&tokens);
        Vocab { tokens, trie }
    }

    /// Extends the id range to `len` ids (new ids unused), e.g. to the model's 65536 from the
    /// 65530 the World text file defines. Never shrinks.
    pub fn pad_to(&mut self, len: usize) {
        if len > self.tokens.len() {
            self.tokens.resize(len, None);
        }
    }

    /// Greedy longest match, left to right. Bytes with no token (possible only for an empty
    /// `Vocab::default()`) are skipped.
    pub fn encode(&self, bytes: &[u8]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(bytes.len() / 3 + 1);
        let mut pos = 0;
        while pos < bytes.len() {
            match self.trie.longest_prefix(&bytes[pos..]) {
                Some((id, len)) => {
                    ids.push(id);
                    pos += len;
                }
                None => pos += 1,
            }
        }
        ids
    }

    /// The bytes of `ids` concatenated. Id 0 (end of text) adds nothing; ids out of range or
    /// unused are an error, which says which of the two it is.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.token_bytes(id) {
                Some(bytes) => out.extend_from_slice(bytes),
                None if (id as usize) < self.tokens.len() => {
                    return Err(Error::invalid(format!(
                        "token id {id} has no text: {}",
                        self.describe()
                    )))
                }
                None => {
                    return Err(Error::invalid(format!(
                        "token id {id} is outside the vocabulary ({} ids)",
                        self.tokens.len()
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Tokens that have text (every used id but the end-of-text id 0).
    pub fn text_tokens(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| t.as_ref().is_some_and(|b| !b.is_empty()))
            .count()
    }

    /// The largest id that is used (has text or is the end-of-text id), if any.
    pub fn last_used_id(&self) -> Option<u32> {
        self.tokens
            .iter()
            .rposition(|t| t.is_some())
            .map(|i| i as u32)
    }

    /// Whether every token is a single byte ([`Vocab::byte_level`], or a file that holds only
    /// bytes): such a vocabulary gives text only for ids 1..=256 of a model's larger id range.
    pub fn is_byte_level(&self) -> bool {
        self.tokens.iter().flatten().all(|b| b.len() <= 1)
    }

    /// One phrase for messages: "a byte-level vocabulary in which 256 of 65536 ids have text".
    pub fn describe(&self) -> String {
        format!(
            "{} in which {} of {} ids have text",
            if self.is_byte_level() {
                "a byte-level vocabulary"
            } else {
                "a vocabulary"
            },
            self.text_tokens(),
            self.tokens.len()
        )
    }

    /// The bytes of token `id` (empty for id 0), or None for an unused or out-of-range id.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize)?.as_deref()
    }

    /// Number of ids (one more than the largest id), used or not.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// `entries`: (id, bytes, where it came from for messages). Checks ids are unique and >= 1,
    /// tokens non-empty, and all 256 single bytes present.
    fn from_entries(
        entries: Vec<(u32, Vec<u8>, String)>,
        min_len: usize,
    ) -> std::result::Result<Vocab, String> {
        let max_id = entries.iter().map(|e| e.0).max().unwrap_or(0);
        // Every id up to the largest costs a table slot, used or not: ids must be nearly dense,
        // or a one-line file naming id 2,000,000 would allocate 48 MB (real vocabularies number
        // their tokens 1, 2, 3, ...; GGUF marks unused ids with explicit padding tokens).
        let dense_limit = entries
            .len()
            .saturating_mul(2)
            .saturating_add(MAX_ID_GAP)
            .max(min_len)
            .max(ALWAYS_ALLOWED_IDS);
        if max_id as usize >= dense_limit {
            return Err(format!(
                "token id {max_id} is far beyond the {} tokens defined (ids must be nearly consecutive)",
                entries.len()
            ));
        }
        let len = (max_id as usize + 1).max(min_len);
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; len];
        tokens[0] = Some(Vec::new());
        for (id, bytes, origin) in entries {
            if id == 0 {
                return Err(format!("{origin}: id 0 is reserved for end of text"));
            }
            if bytes.is_empty() {
                return Err(format!("{origin}: empty token"));
            }
            let slot = &mut tokens[id as usize];
            if slot.is_some() {
                return Err(format!("{origin}: duplicate id {id}"));
            }
            *slot = Some(bytes);
        }
        let mut single = [false; 256];
        for bytes in tokens.iter().flatten() {
            if let [b] = bytes.as_slice() {
                single[*b as usize] = true;
            }
        }
        if let Some(missing) = single.iter().position(|present| !present) {
            return Err(format!(
                "not a complete byte vocabulary: no token for the single byte {missing:#04x}"
            ));
        }
        let trie = Trie::build(&tokens);
        Ok(Vocab { tokens, trie })
    }
}

/// Parses the `ID LITERAL LEN` lines of rwkv_vocab_v20230424.txt.
fn parse_txt(path: &Path, data: &[u8]) -> Result<Vec<(u32, Vec<u8>, String)>> {
    let mut entries = Vec::new();
    for (index, raw_line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let err = |what: String| Error::format(path, format!("line {line_no}: {what}"));
        let raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if raw_line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let line = std::str::from_utf8(raw_line).map_err(|_| err("not UTF-8".into()))?;
        let (id_text, rest) = line
            .split_once(' ')
            .ok_or_else(|| err("expected `ID LITERAL LEN`".into()))?;
        let (literal, len_text) = rest
            .rsplit_once(' ')
            .ok_or_else(|| err("expected `ID LITERAL LEN`".into()))?;
        let id: u32 = id_text
            .parse()
            .ok()
            .filter(|&id| id <= MAX_TOKEN_ID)
            .ok_or_else(|| err(format!("bad token id {id_text:?}")))?;
        let declared: usize = len_text
            .parse()
            .map_err(|_| err(format!("bad byte length {len_text:?}")))?;
        let bytes = parse_python_literal(literal).map_err(|e| err(format!("{literal}: {e}")))?;
        if bytes.len() != declared {
            return Err(err(format!(
                "{literal} is {} bytes, the line says {declared}",
                bytes.len()
            )));
        }
        entries.push((id, bytes, format!("line {line_no}")));
    }
    if entries.is_empty() {
        return Err(Error::format(path, "not a vocabulary: no token lines"));
    }
    Ok(entries)
}

/// A JSON token: text (UTF-8 bytes) or, for tokens that are not valid UTF-8, an array of bytes
/// (web-rwkv's `rwkv_vocab_v20230424.json` writes those 486 tokens so).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonToken {
    Text(String),
    Bytes(Vec<u8>),
}

/// Reads `{"id": token, ...}`, keeping duplicate keys visible (a plain map would drop them).
struct JsonVocabVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVocabVisitor {
    type Value = Vec<(u32, Vec<u8>, String)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of \"id\": token")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let id: u32 = key
                .parse()
                .ok()
                .filter(|&id| id <= MAX_TOKEN_ID)
                .ok_or_else(|| A::Error::custom(format!("bad token id {key:?}")))?;
            if !seen.insert(id) {
                return Err(A::Error::custom(format!("duplicate id {id}")));
            }
            let bytes = match map.next_value::<JsonToken>()? {
                JsonToken::Text(s) => s.into_bytes(),
                JsonToken::Bytes(b) => b,
            };
            entries.push((id, bytes, format!("id {id}")));
        }
        Ok(entries)
    }
}

fn parse_json(path: &Path, data: &[u8]) -> Result<Vec<(u32, Vec<u8>, String)>> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(data);
    let entries = de
        .deserialize_map(JsonVocabVisitor)
        .and_then(|entries| de.end().map(|()| entries))
        .map_err(|e| Error::format(path, format!("not a JSON vocabulary: {e}")))?;
    if entries.is_empty() {
        return Err(Error::format(path, "not a vocabulary: no tokens"));
    }
    Ok(entries)
}

/// Reads exactly `digits` hex digits from `chars`.
fn hex_escape(chars: &mut std::str::Chars, digits: usize) -> std::result::Result<u32, String> {
    let mut value = 0u32;
    for _ in 0..digits {
        let c = chars.next().ok_or("truncated hex escape")?;
        value = value * 16 + c.to_digit(16).ok_or("bad hex digit in escape")?;
    }
    Ok(value)
}

/// Parses a Python `str` or `bytes` literal ('..', "..", b'..', b"..") into bytes (a str's UTF-8).
fn parse_python_literal(literal: &str) -> std::result::Result<Vec<u8>, String> {
    let (is_bytes, quoted) = match literal.strip_prefix('b').or(literal.strip_prefix('B')) {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let quote = quoted.chars().next().ok_or("empty literal")?;
    if quote != '\'' && quote != '"' {
        return Err("not a quoted literal".into());
    }
    let body = quoted
        .strip_prefix(quote)
        .and_then(|s| s.strip_suffix(quote))
        .ok_or("unterminated literal")?;
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    // A code point in a str literal becomes its UTF-8; in a bytes literal it must be one byte.
    let push = |out: &mut Vec<u8>, cp: u32| -> std::result::Result<(), String> {
        if is_bytes {
            let byte = u8::try_from(cp).map_err(|_| "non-byte value in bytes literal")?;
            out.push(byte);
        } else {
            let c = char::from_u32(cp).ok_or("escape is not a Unicode scalar value")?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c == quote {
            return Err("unescaped quote inside literal".into());
        }
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err("non-ASCII character in bytes literal".into());
            }
            push(&mut out, c as u32)?;
            continue;
        }
        let escaped = chars.next().ok_or("literal ends in a backslash")?;
        let cp = match escaped {
            '\\' | '\'' | '"' => escaped as u32,
            'n' => 0x0a,
            't' => 0x09,
            'r' => 0x0d,
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'v' => 0x0b,
            '0' => 0,
            'x' => hex_escape(&mut chars, 2)?,
            'u' if !is_bytes => hex_escape(&mut chars, 4)?,
            'U' if !is_bytes => hex_escape(&mut chars, 8)?,
            other => return Err(format!("unsupported escape \\{other}")),
        };
        push(&mut out, cp)?;
    }
    Ok(out)
}

/// Parses the inside of Python's `repr(bytes)` (what llama.cpp stores per rwkv token).
fn parse_repr_inner(text: &str) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if !(' '..='~').contains(&c) {
                return Err(format!("{c:?} cannot appear in a bytes repr"));
            }
            out.push(c as u8);
            continue;
        }
        let escaped = chars.next().ok_or("ends in a backslash")?;
        out.push(match escaped {
            '\\' | '\'' | '"' => escaped as u8,
            'n' => b'\n',
            't' => b'\t',
            'r' => b'\r',
            // Two hex digits always fit a byte.
            'x' => hex_escape(&mut chars, 2)? as u8,
            other => return Err(format!("unsupported escape \\{other}")),
        });
    }
    if out.is_empty() {
        return Err("empty token".into());
    }
    Ok(out)
}

/// `repr(bytes)[2:-1]` exactly as CPython writes it: single quotes unless the bytes contain `'`
/// and no `"`; the chosen quote and `\` are backslash-escaped; \t \n \r; other bytes outside
/// 0x20..0x7e as lower-case `\xhh`.
fn repr_inner(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            _ if b == quote => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

const NO_TOKEN: u32 = u32::MAX;

/// A byte trie in flat arrays: node `n` has `edges[first_edge..first_edge + edge_count]`,
/// sorted by byte. Node 0 is the root.
#[derive(Clone, Default)]
struct Trie {
    nodes: Vec<TrieNode>,
    edges: Vec<(u8, u32)>,
    /// Child of the root for each first byte (0 = none), to skip a search on the widest node.
    root_children: Vec<u32>,
}

#[derive(Clone, Copy)]
struct TrieNode {
    token: u32,
    first_edge: u32,
    edge_count: u32,
}

impl Trie {
    fn build(tokens: &[Option<Vec<u8>>]) -> Trie {
        // Insert in byte order: then a node's newest child is the only one a later token can
        // share, so children arrive sorted and insertion only looks at the last child.
        let mut sorted: Vec<(&[u8], u32)> = tokens
            .iter()
            .enumerate()
            .filter_map(|(id, t)| Some((t.as_deref()?, id as u32)))
            .filter(|(bytes, _)| !bytes.is_empty())
            .collect();
        sorted.sort_unstable();
        let mut tokens_at: Vec<u32> = vec![NO_TOKEN];
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        for (bytes, id) in sorted {
            let mut node = 0usize;
            for &b in bytes {
                node = match children[node].last() {
                    Some(&(last_byte, child)) if last_byte == b => child as usize,
                    _ => {
                        let child = tokens_at.len();
                        tokens_at.push(NO_TOKEN);
                        children.push(Vec::new());
                        children[node].push((b, child as u32));
                        child
                    }
                };
            }
            // Equal byte strings sort by id: the lowest id wins.
            if tokens_at[node] == NO_TOKEN {
                tokens_at[node] = id;
            }
        }
        let mut nodes = Vec::with_capacity(tokens_at.len());
        let mut edges = Vec::new();
        for (token, kids) in tokens_at.into_iter().zip(&children) {
            nodes.push(TrieNode {
                token,
                first_edge: edges.len() as u32,
                edge_count: kids.len() as u32,
            });
            edges.extend_from_slice(kids);
        }
        let mut root_children = vec![0u32; 256];
        for &(b, child) in &children[0] {
            root_children[b as usize] = child;
        }
        Trie {
            nodes,
            edges,
            root_children,
        }
    }

    /// (token id, length) of the longest token that is a prefix of `bytes`.
    #[inline]
    fn longest_prefix(&self, bytes: &[u8]) -> Option<(u32, usize)> {
        let first = *bytes.first()?;
        let mut node = *self.root_children.get(first as usize)? as usize;
        if node == 0 {
            return None;
        }
        let mut best = None;
        let mut depth = 1;
        loop {
            let n = self.nodes[node];
            if n.token != NO_TOKEN {
                best = Some((n.token, depth));
            }
            let Some(&next) = bytes.get(depth) else { break };
            let start = n.first_edge as usize;
            let kids = &self.edges[start..start + n.edge_count as usize];
            match kids.binary_search_by_key(&next, |e| e.0) {
                Ok(i) => node = kids[i].1 as usize,
                Err(_) => break,
            }
            depth += 1;
        }
        best
    }
}
