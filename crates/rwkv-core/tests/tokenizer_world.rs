//! The World tokenizer against published ids, round trips, the GGUF token list, bad files.

use std::path::{Path, PathBuf};

use rwkv_core::tokenizer::Vocab;
use rwkv_core::Error;

/// `../shared/refdata/<rel>`, or None after a skip (a failure under RWKV_REQUIRE_REFDATA=1).
fn shared(rel: &str) -> Option<PathBuf> {
    rwkv_testing::refdata(&format!("refdata/{rel}"))
}

fn world_txt() -> Option<Vocab> {
    Some(Vocab::from_file(&shared("vocab/rwkv_vocab_v20230424.txt")?).unwrap())
}

/// splitmix64: a small seeded PRNG so the tests need no `rand`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random byte strings mixing raw bytes (often invalid UTF-8), ASCII words and CJK text.
fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let pieces = 1 + rng.below(40);
    for _ in 0..pieces {
        match rng.below(4) {
            0 => out.extend((0..1 + rng.below(8)).map(|_| rng.next() as u8)),
            1 => out.extend_from_slice(b" the quick\n\n  fox's \"jump\"\t\\x"),
            2 => out.extend_from_slice("今天天气不错，блабла ".as_bytes()),
            _ => out.extend(std::iter::repeat_n(b' ', rng.below(200))),
        }
    }
    out
}

#[test]
fn published_ids_from_txt_and_json() {
    let Some(vectors) = shared("tokenizer-vectors/world_tokenizer_vectors.json") else {
        return;
    };
    let Some(json_path) = shared("vocab/rwkv_vocab_v20230424.json") else {
        return;
    };
    let Some(txt) = world_txt() else { return };
    let json = Vocab::from_file(&json_path).unwrap();
    assert_eq!(txt, json, "the .txt and .json vocabularies differ");
    assert_eq!(txt.len(), 65530);
    assert_eq!(txt.token_bytes(261), Some(&b"\n\n"[..]));
    assert_eq!(txt.token_bytes(0), Some(&b""[..]));
    assert_eq!(txt.token_bytes(65530), None);

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(vectors).unwrap()).unwrap();
    let cases = doc["vectors"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            txt.encode(text.as_bytes()),
            expected,
            "{text:?} (txt vocab)"
        );
        assert_eq!(
            json.encode(text.as_bytes()),
            expected,
            "{text:?} (json vocab)"
        );
        assert_eq!(txt.decode(&expected).unwrap(), text.as_bytes());
    }
}

#[test]
fn random_bytes_round_trip_world_and_byte_level() {
    let mut rng = Rng(0x5eed_2024_0424);
    let byte_level = Vocab::byte_level(65536);
    let world = world_txt();
    for _ in 0..300 {
        let bytes = random_bytes(&mut rng);
        let ids = byte_level.encode(&bytes);
        assert_eq!(ids.len(), bytes.len());
        assert!(ids.iter().zip(&bytes).all(|(&id, &b)| id == b as u32 + 1));
        assert_eq!(byte_level.decode(&ids).unwrap(), bytes);
        if let Some(world) = &world {
            let ids = world.encode(&bytes);
            assert!(ids.len() <= bytes.len());
            assert_eq!(world.decode(&ids).unwrap(), bytes);
        }
    }
}

#[test]
fn world_encoding_is_greedy_longest_match() {
    let Some(world) = world_txt() else { return };
    // 300 spaces: the longest space token is 128 bytes (id 65529).
    let ids = world.encode(&[b' '; 300]);
    assert_eq!(&ids[..2], &[65529, 65529]);
    assert_eq!(world.decode(&ids).unwrap(), vec![b' '; 300]);
    // Check greediness against a brute-force longest match on random text.
    let mut by_bytes = std::collections::HashMap::new();
    for id in (1..world.len() as u32).rev() {
        if let Some(b) = world.token_bytes(id) {
            by_bytes.insert(b.to_vec(), id);
        }
    }
    let mut rng = Rng(77);
    for _ in 0..50 {
        let bytes = random_bytes(&mut rng);
        let mut expected = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (len, id) = (1..=(bytes.len() - pos).min(128))
                .rev()
                .find_map(|len| by_bytes.get(&bytes[pos..pos + len]).map(|&id| (len, id)))
                .unwrap();
            expected.push(id);
            pos += len;
        }
        assert_eq!(world.encode(&bytes), expected);
    }
}

#[test]
fn gguf_token_list_round_trips() {
    let Some(mut world) = world_txt() else { return };
    world.pad_to(65536);
    let tokens = world.to_gguf_tokens();
    assert_eq!(tokens.len(), 65536);
    assert_eq!(tokens[0], "<s>");
    assert_eq!(tokens[11], "\\n"); // id 11 = b'\n'
    assert_eq!(tokens[65535], "[PAD65535]");
    assert_eq!(Vocab::from_gguf_tokens(&tokens).unwrap(), world);
    // Python repr quoting: ' alone is unescaped (repr picks "), both quotes escape '.
    let find = |bytes: &[u8]| {
        (1..65530)
            .find(|&id| world.token_bytes(id) == Some(bytes))
            .unwrap()
    };
    assert_eq!(tokens[find(b"'") as usize], "'");
    assert_eq!(tokens[find(b"\"") as usize], "\"");
    assert_eq!(tokens[find(b"\\") as usize], "\\\\");
    assert_eq!(tokens[find(&[0xe4]) as usize], "\\xe4");
    assert_eq!(tokens[find(&[0x7f]) as usize], "\\x7f");
    assert_eq!(tokens[find(b"\r\n") as usize], "\\r\\n");
}

#[test]
fn gguf_tokens_with_both_quotes_and_errors() {
    let mut tokens: Vec<String> = vec!["<s>".into()];
    tokens.extend(
        (0..=255u8).map(|b| Vocab::byte_level(300).to_gguf_tokens()[b as usize + 1].clone()),
    );
    tokens.push("\\'\"".into());
    let v = Vocab::from_gguf_tokens(&tokens).unwrap();
    assert_eq!(v.token_bytes(257), Some(&b"'\""[..]));
    assert_eq!(v.to_gguf_tokens(), tokens);
    for bad in ["\\q", "é", "\\x4", "", "a\\"] {
        let mut t = tokens.clone();
        t.push(bad.into());
        assert!(
            matches!(Vocab::from_gguf_tokens(&t), Err(Error::Format { .. })),
            "{bad:?}"
        );
    }
    // Missing single-byte tokens make encoding partial: rejected.
    assert!(Vocab::from_gguf_tokens(&tokens[..100]).is_err());
}

#[test]
fn byte_level_layout_and_decode_errors() {
    let v = Vocab::byte_level(65536);
    assert_eq!(v.len(), 65536);
    assert_eq!(v.token_bytes(0), Some(&b""[..]));
    assert_eq!(v.token_bytes(1), Some(&[0u8][..]));
    assert_eq!(v.token_bytes(256), Some(&[255u8][..]));
    assert_eq!(v.token_bytes(257), None);
    assert_eq!(v.decode(&[105, 0, 106]).unwrap(), b"hi");
    // An unused id inside the range and an id past it are different mistakes; the messages say
    // which (the first used to claim id 300 was "not in the vocabulary (size 65536)").
    match v.decode(&[300]) {
        Err(Error::Invalid(m)) => assert!(
            m.contains("300 has no text")
                && m.contains("byte-level")
                && m.contains("256 of 65536 ids have text"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    match v.decode(&[70000]) {
        Err(Error::Invalid(m)) => assert!(
            m.contains("70000 is outside the vocabulary (65536 ids)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(v.is_byte_level());
    assert_eq!(v.text_tokens(), 256);
    assert_eq!(v.last_used_id(), Some(256));
    // 256 ids: rwkv.cpp's tiny models, id = byte.
    let tiny = Vocab::byte_level(256);
    assert_eq!(tiny.encode(b"\"in"), vec![34, 105, 110]);
    assert_eq!(tiny.last_used_id(), Some(255));
    let words = Vocab::from_file(&write_temp(
        "words.txt",
        txt_vocab("1000 'hello' 5\n").as_bytes(),
    ))
    .unwrap();
    assert!(!words.is_byte_level());
    assert_eq!(
        (words.text_tokens(), words.last_used_id()),
        (257, Some(1000))
    );
    assert_eq!(Vocab::default().encode(b"abc"), Vec::<u32>::new());
}

fn write_temp(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rwkv-tokenizer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A valid text vocabulary: the 256 single bytes as the World file writes them, plus `extra`.
fn txt_vocab(extra: &str) -> String {
    let mut s = String::new();
    for b in 0..=255u32 {
        let lit = if b < 0x80 {
            match b as u8 {
                b'\'' => "\"'\"".to_string(),
                b'\\' => "'\\\\'".to_string(),
                0x20..=0x7e => format!("'{}'", b as u8 as char),
                _ => format!("'\\x{b:02x}'"),
            }
        } else {
            format!("b'\\x{b:02x}'")
        };
        s.push_str(&format!("{} {} 1\n", b + 1, lit));
    }
    s.push_str(extra);
    s
}

fn assert_format_error(path: &Path, needle: &str) {
    match Vocab::from_file(path) {
        Err(Error::Format { path: p, what }) => {
            assert_eq!(p, path);
            assert!(what.contains(needle), "{what:?} lacks {needle:?}");
        }
        other => panic!("{}: expected a format error, got {other:?}", path.display()),
    }
}

#[test]
fn text_literals_and_bad_files() {
    let good = write_temp(
        "good.txt",
        txt_vocab(
            "257 '\\u00e9\\t' 3\n258 b'\\xff\\x00' 2\n259 \"it's\" 4\r\n260 '\\U0001f600' 4\n",
        )
        .as_bytes(),
    );
    let v = Vocab::from_file(&good).unwrap();
    assert_eq!(v.token_bytes(257), Some("é\t".as_bytes()));
    assert_eq!(v.token_bytes(258), Some(&[0xff, 0][..]));
    assert_eq!(v.token_bytes(259), Some(&b"it's"[..]));
    assert_eq!(v.token_bytes(260), Some("😀".as_bytes()));
    // '\x80' in a str literal is U+0080: two UTF-8 bytes.
    let str_x80 = write_temp("x80.txt", txt_vocab("257 'a\\x80' 3\n").as_bytes());
    assert_eq!(
        Vocab::from_file(&str_x80).unwrap().token_bytes(257),
        Some(&b"a\xc2\x80"[..])
    );

    let cases: [(&str, String, &str); 9] = [
        (
            "dup.txt",
            txt_vocab("5 'zz' 2\n"),
            "line 257: duplicate id 5",
        ),
        ("len.txt", txt_vocab("257 'abc' 2\n"), "line 257"),
        ("lit.txt", txt_vocab("257 'ab\\q' 3\n"), "line 257"),
        ("unterminated.txt", txt_vocab("257 'ab 2\n"), "line 257"),
        ("surrogate.txt", txt_vocab("257 '\\ud800' 3\n"), "line 257"),
        ("bytes_u.txt", txt_vocab("257 b'\\u0041' 1\n"), "line 257"),
        ("noid.txt", txt_vocab("x 'ab' 2\n"), "line 257"),
        (
            "missing_byte.txt",
            txt_vocab("").replacen("1 '\\x00' 1\n", "", 1),
            "0x00",
        ),
        ("garbage.txt", "hello world\n".to_string(), "line 1"),
    ];
    for (name, contents, needle) in cases {
        assert_format_error(&write_temp(name, contents.as_bytes()), needle);
    }
    assert_format_error(
        &write_temp("zero.txt", txt_vocab("0 'ab' 2\n").as_bytes()),
        "reserved",
    );
    assert_format_error(&write_temp("empty.txt", b"\n\n"), "no token");
    assert_format_error(&write_temp("bin.txt", &[0xff, 0xfe, 0x20, 0x00]), "line 1");
    let missing = std::env::temp_dir().join("rwkv-no-such-vocab.txt");
    assert!(matches!(Vocab::from_file(&missing), Err(Error::Io { .. })));
}

#[test]
fn json_vocab_and_bad_json() {
    let mut body: Vec<String> = (0..=255u32)
        .map(|b| {
            if b < 0x80 {
                format!(
                    "\"{}\": {}",
                    b + 1,
                    serde_json::to_string(&(b as u8 as char).to_string()).unwrap()
                )
            } else {
                format!("\"{}\": [{b}]", b + 1)
            }
        })
        .collect();
    body.push("\"300\": \"héllo\"".into());
    let good = write_temp("good.json", format!("{{{}}}", body.join(",\n")).as_bytes());
    let v = Vocab::from_file(&good).unwrap();
    assert_eq!(v.len(), 301);
    assert_eq!(v.token_bytes(300), Some("héllo".as_bytes()));
    assert_eq!(v.token_bytes(200), Some(&[199u8][..]));
    assert_eq!(v.token_bytes(299), None);

    let mut dup = body.clone();
    dup.push("\"7\": \"again\"".into());
    assert_format_error(
        &write_temp("dup.json", format!("{{{}}}", dup.join(",\n")).as_bytes()),
        "duplicate id 7",
    );
    let mut bad_byte = body.clone();
    bad_byte.push("\"301\": [256]".into());
    assert_format_error(
        &write_temp(
            "badbyte.json",
            format!("{{{}}}", bad_byte.join(",")).as_bytes(),
        ),
        "line",
    );
    assert_format_error(
        &write_temp("array.json", b"{\"1\": 5}"),
        "not a JSON vocabulary",
    );
    assert_format_error(
        &write_temp("trunc.json", b"{\"1\": \"a\""),
        "not a JSON vocabulary",
    );
    assert_format_error(&write_temp("key.json", b"{\"one\": \"a\"}"), "bad token id");
}
