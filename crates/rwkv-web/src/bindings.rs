//! The wasm-bindgen surface: [`WebModel`], which `web/rwkv.js` wraps in the documented JS API.
//!
//! One model owns one WebGPU device, one state slot and two compiled plans (1 token, and
//! `CHUNK` tokens for prompts). Every GPU round trip is awaited; a call made while another is
//! running is rejected ("busy") rather than interleaved (the JS wrapper queues calls).

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Float32Array, Function, Promise, Uint32Array, Uint8Array};
use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::model::{self as rwkv_model, ByteSource, Model};
use rwkv_core::runner::{Chunking, FeedOutput, Runner};
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::{DType, Error, Result};
use rwkv_wgpu::{WgpuBackend, WgpuOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::text::Utf8Stream;
use rwkv_core::sampler::{Sampler, SamplerParams};

/// Tokens per prefill step: long prompts run in steps of this many, the rest one by one.
const CHUNK: usize = 16;
/// The only state slot (one conversation per model object).
const SLOT: usize = 0;
/// The end-of-text token of the RWKV vocabularies.
const END_OF_TEXT: u32 = 0;

fn js_err(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// A model on the GPU, ready to run: the shared engine core on WebGPU, one slot.
struct Engine {
    core: Runner<WgpuBackend>,
    vocab_size: usize,
    logits: Vec<f32>,
    /// Tokens to feed before the next sample (the prompt, then the last sampled token).
    pending: Vec<u32>,
    /// The state must be zeroed before the next step.
    needs_reset: bool,
    sampler: Sampler,
    text: Utf8Stream,
}

impl Engine {
    /// Runs `tokens` through the model on the slot's state; afterwards `self.logits` holds the
    /// logits after the last token.
    async fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if self.needs_reset {
            self.core.reset(SLOT).await?;
            self.needs_reset = false;
        }
        self.core
            .feed(SLOT, tokens, FeedOutput::Last(&mut self.logits))
            .await
    }
}

/// Reports progress to JS; when the callback returns a promise, waits for it (the wrapper uses
/// that to let the page repaint during a long upload).
async fn report(callback: &Option<Function>, done: u64, total: u64) {
    let Some(f) = callback else { return };
    if let Ok(v) = f.call2(
        &JsValue::NULL,
        &JsValue::from_f64(done as f64),
        &JsValue::from_f64(total as f64),
    ) {
        if let Ok(p) = v.dyn_into::<Promise>() {
            let _ = JsFuture::from(p).await;
        }
    }
}

async fn open(
    mut model: Model,
    vocab: Vocab,
    max_binding_bytes: Option<f64>,
    on_progress: &Option<Function>,
) -> Result<(Engine, String)> {
    rwkv_model::validate(&model)?;
    // No environment in the browser: every switch is passed here (the defaults, which leave
    // out what browsers lack, e.g. cooperative matrices, plus the page's binding cap).
    let options = WgpuOptions {
        max_binding_bytes: max_binding_bytes.filter(|b| *b >= 4.0).map(|b| b as u64),
        ..WgpuOptions::default()
    };
    let backend = WgpuBackend::new_async(options).await?;
    let desc = model.desc.clone();
    // Prompts in steps of CHUNK tokens, the rest one by one: two plans to compile.
    let mut core = Runner::new(backend, &model, 1, Chunking::FixedThenOnes { max: CHUNK })?;
    report(on_progress, 0, model.total_bytes()).await;
    // Each tensor leaves wasm memory as soon as it is on the GPU: the core takes it out of the
    // model and fetches a streamed one from the JS array only for its upload.
    while let Some((done, total)) = core.upload_next(&mut model).await? {
        report(on_progress, done, total).await;
    }
    let info = format!(
        "{{\"device\":{},\"model\":{},\"source\":{:?},\"format\":{:?},\"vocab\":{}}}",
        serde_json::to_string(&core.backend.device_info()).unwrap_or_default(),
        serde_json::to_string(&desc).unwrap_or_default(),
        model.source.display().to_string(),
        model.format,
        vocab.len(),
    );
    let engine = Engine {
        core,
        vocab_size: desc.vocab_size,
        logits: vec![0f32; desc.vocab_size],
        pending: Vec::new(),
        needs_reset: false,
        sampler: Sampler::new(SamplerParams {
            seed: 0,
            ..Default::default()
        }),
        text: Utf8Stream::default(),
    };
    Ok((engine, info))
}

/// The vocabulary: an explicit file, else the model's own, else one token per byte (as the
/// native engine does).
fn choose_vocab(model: &Model, vocab_file: Option<Vec<u8>>) -> Result<Vocab> {
    let n = model.desc.vocab_size;
    let mut vocab = match (vocab_file, &model.vocab) {
        (Some(bytes), _) => {
            let v = Vocab::from_bytes(Path::new("vocab"), &bytes)?;
            if v.len() > n {
                return Err(Error::model(
                    &model.source,
                    format!(
                        "the vocabulary file has {} tokens, the model only {n}",
                        v.len()
                    ),
                ));
            }
            v
        }
        (None, Some(v)) => v.clone(),
        (None, None) => Vocab::byte_level(n),
    };
    vocab.pad_to(n);
    Ok(vocab)
}

/// A model in the browser. Create it with [`WebModel::load`] or [`WebModel::synth`].
#[wasm_bindgen]
pub struct WebModel {
    engine: Rc<RefCell<Option<Engine>>>,
    vocab: Rc<Vocab>,
    info: String,
}

#[wasm_bindgen]
impl WebModel {
    /// Reads a model file (GGUF, safetensors, ...) from `bytes` and uploads it to the GPU.
    /// GGUF and safetensors are streamed: only the header and one tensor at a time are copied
    /// into wasm memory; other formats are copied whole. `on_progress(done, total)` is called
    /// per tensor (bytes).
    pub async fn load(
        bytes: Uint8Array,
        name: String,
        vocab: Option<Vec<u8>>,
        max_binding_bytes: Option<f64>,
        on_progress: Option<Function>,
    ) -> std::result::Result<WebModel, JsValue> {
        let model = read_model(bytes, &name).map_err(js_err)?;
        Self::from_model(model, vocab, max_binding_bytes, on_progress).await
    }

    /// A random model made in the browser (`rwkv synth` / `synth:SHAPE:DTYPE:SEED` natively),
    /// for tests and demos without a file.
    pub async fn synth(
        shape: String,
        dtype: String,
        seed: u32,
        max_binding_bytes: Option<f64>,
        on_progress: Option<Function>,
    ) -> std::result::Result<WebModel, JsValue> {
        let shape = SynthShape::parse(&shape)
            .ok_or_else(|| JsError::new(&format!("unknown shape '{shape}'")))?;
        let dtype = DType::parse(&dtype)
            .ok_or_else(|| JsError::new(&format!("unknown dtype '{dtype}'")))?;
        let model = synth::synth_model(shape, dtype, seed as u64).map_err(js_err)?;
        Self::from_model(model, None, max_binding_bytes, on_progress).await
    }

    async fn from_model(
        model: Model,
        vocab: Option<Vec<u8>>,
        max_binding_bytes: Option<f64>,
        on_progress: Option<Function>,
    ) -> std::result::Result<WebModel, JsValue> {
        let vocab = choose_vocab(&model, vocab).map_err(js_err)?;
        let (engine, info) = open(model, vocab.clone(), max_binding_bytes, &on_progress)
            .await
            .map_err(js_err)?;
        Ok(WebModel {
            engine: Rc::new(RefCell::new(Some(engine))),
            vocab: Rc::new(vocab),
            info,
        })
    }

    /// JSON: device, model shape, source, format, vocabulary size.
    pub fn info(&self) -> String {
        self.info.clone()
    }

    /// Token ids of `text`.
    pub fn tokenize(&self, text: &str) -> Uint32Array {
        Uint32Array::from(&self.vocab.encode(text.as_bytes())[..])
    }

    /// Text of token ids (unknown ids are skipped, invalid UTF-8 becomes U+FFFD).
    pub fn detokenize(&self, ids: Vec<u32>) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|&id| self.vocab.token_bytes(id))
            .flatten()
            .copied()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Promise of a Float32Array: the logits after `tokens`, from an empty state.
    pub fn logits(&self, tokens: Vec<u32>) -> Promise {
        self.spawn(move |mut e| async move {
            let r = async {
                if let Some(t) = tokens.iter().find(|&&t| t as usize >= e.vocab_size) {
                    return Err(Error::invalid(format!(
                        "token {t} is outside the vocabulary of {}",
                        e.vocab_size
                    )));
                }
                e.needs_reset = true;
                e.feed(&tokens).await?;
                // The next generation must not continue from this state.
                e.needs_reset = true;
                Ok(Float32Array::from(&e.logits[..]).into())
            }
            .await;
            (e, r)
        })
    }

    /// Starts a generation: an empty state, then `prompt` (the end-of-text token when empty).
    pub fn begin(&self, prompt: &str, seed: u32) -> std::result::Result<(), JsValue> {
        let mut slot = self.engine.try_borrow_mut().map_err(|_| busy())?;
        let e = slot.as_mut().ok_or_else(busy)?;
        let mut ids = self.vocab.encode(prompt.as_bytes());
        if ids.is_empty() {
            ids.push(END_OF_TEXT);
        }
        e.pending = ids;
        e.needs_reset = true;
        e.sampler = Sampler::new(SamplerParams {
            seed: seed as u64,
            top_k: 0,
            ..Default::default()
        });
        e.text = Utf8Stream::default();
        Ok(())
    }

    /// Promise of the next piece of text (a string, maybe empty while a character is split over
    /// tokens), or `undefined` at the end-of-text token when `stop_at_end` is set.
    pub fn next(&self, temperature: f32, top_p: f32, stop_at_end: bool) -> Promise {
        let vocab = self.vocab.clone();
        self.spawn(move |mut e| async move {
            let r = async {
                if e.pending.is_empty() {
                    return Err(Error::invalid("call begin(prompt) before next()"));
                }
                let pending = std::mem::take(&mut e.pending);
                e.feed(&pending).await?;
                let params = e.sampler.params_mut();
                params.temperature = temperature;
                params.top_p = top_p;
                let token = e.sampler.sample(&e.logits);
                e.pending = vec![token];
                if stop_at_end && token == END_OF_TEXT {
                    let rest = e.text.finish();
                    return Ok(if rest.is_empty() {
                        JsValue::UNDEFINED
                    } else {
                        rest.into()
                    });
                }
                Ok(e.text
                    .push(vocab.token_bytes(token).unwrap_or_default())
                    .into())
            }
            .await;
            (e, r)
        })
    }

    /// Runs `task` on the engine, taken out of its cell for the duration (a second call meanwhile
    /// is rejected as busy) and put back afterwards, error or not.
    fn spawn<F, Fut>(&self, task: F) -> Promise
    where
        F: FnOnce(Engine) -> Fut,
        Fut: Future<Output = (Engine, Result<JsValue>)> + 'static,
    {
        let taken = self
            .engine
            .try_borrow_mut()
            .ok()
            .and_then(|mut slot| slot.take());
        let Some(engine) = taken else {
            return Promise::reject(&busy());
        };
        let cell = self.engine.clone();
        let fut = task(engine);
        future_to_promise(async move {
            let (engine, result) = fut.await;
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = Some(engine);
            }
            result.map_err(js_err)
        })
    }
}

fn busy() -> JsValue {
    JsError::new("the model is busy with another call (await it first)").into()
}

/// A model file held by JS, outside wasm memory, read a window at a time.
struct JsBytes {
    array: Uint8Array,
    name: String,
}

// SAFETY: `ByteSource` is `Send + Sync` so that `Model` is, for native threads. A JS object is
// tied to the thread that made it, but a wasm32 build without the `atomics` feature has exactly
// one thread, so no other thread can ever touch it. With threads (atomics) these impls would be
// unsound, so they do not exist there, and such a build fails to compile instead.
#[cfg(not(target_feature = "atomics"))]
unsafe impl Send for JsBytes {}
#[cfg(not(target_feature = "atomics"))]
unsafe impl Sync for JsBytes {}

impl ByteSource for JsBytes {
    fn len(&self) -> u64 {
        self.array.length().into()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = self.array.length();
        let range = u32::try_from(offset).ok().and_then(|start| {
            let end = start.checked_add(u32::try_from(buf.len()).ok()?)?;
            (end <= len).then_some(start..end)
        });
        let Some(range) = range else {
            return Err(Error::format(
                &self.name,
                format!(
                    "read of {} bytes at offset {offset} is outside the {len}-byte file",
                    buf.len()
                ),
            ));
        };
        let part = self.array.subarray(range.start, range.end);
        // The array can shrink under us (a transferred ArrayBuffer reads as empty); copy_to
        // would panic on a length mismatch.
        if part.length() as usize != buf.len() {
            return Err(Error::format(
                &self.name,
                "the file's bytes changed while it was being read",
            ));
        }
        part.copy_to(buf);
        Ok(())
    }
}

/// Parses a model file held by JS into the canonical model: GGUF and safetensors through
/// `load_source` (tensors stay in the JS array until uploaded), other formats copied into wasm
/// memory whole for `load_bytes`.
fn read_model(bytes: Uint8Array, name: &str) -> Result<Model> {
    let source = Arc::new(JsBytes {
        array: bytes,
        name: name.to_string(),
    });
    let opts = LoadOptions::default();
    match formats::detect_source(source.as_ref(), name)? {
        Format::Gguf | Format::Safetensors => formats::load_source(source, name, &opts),
        Format::Pth | Format::RwkvCpp => formats::load_bytes(source.array.to_vec(), name, &opts),
    }
}
