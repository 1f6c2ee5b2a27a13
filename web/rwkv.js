// rwkv-hybrid in the browser: the JS API over the wasm module built by scripts/build-web.sh
// (web/pkg/). Types in rwkv.d.ts. Needs WebGPU (navigator.gpu).
//
//   const model = await Model.load(bytes, { vocab, onProgress });
//   const logits = await model.logits([1, 2, 3]);              // Float32Array, vocab length
//   for await (const piece of model.generate('Hello', { maxTokens: 64 })) out += piece;
//   model.stop();                                                // or pass { signal } to generate
import init, { WebModel } from './pkg/rwkv_web.js';

let ready = null;
let wasm = null;
function initWasm() {
  ready ??= init().then((exports) => { wasm = exports; });
  return ready;
}

/**
 * Bytes of the wasm module's linear memory (0 before the first load). It only grows, so after a
 * load it is the peak the load needed: model files are streamed to the GPU one tensor at a time,
 * so for GGUF and safetensors this stays well below the file size.
 */
export function wasmMemoryBytes() {
  return wasm ? wasm.memory.buffer.byteLength : 0;
}

// Progress callback for the wasm side: reports, and every ~30 ms returns a promise that
// resolves on a new task so the page can repaint during a long upload.
function progressHook(onProgress) {
  let last = performance.now();
  return (done, total) => {
    if (onProgress) onProgress(done, total);
    const now = performance.now();
    if (now - last > 30) {
      last = now;
      return new Promise((resolve) => setTimeout(resolve, 0));
    }
    return undefined;
  };
}

export class Model {
  #inner;
  #queue = Promise.resolve();
  #generation = 0;
  #tokens = 0;

  constructor(inner) {
    this.#inner = inner;
  }

  /** Loads a model file (GGUF or safetensors bytes) onto the GPU. */
  static async load(bytes, { vocab, onProgress, name = 'model', maxBindingBytes } = {}) {
    await initWasm();
    const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const vocabBytes = typeof vocab === 'string' ? new TextEncoder().encode(vocab) : vocab;
    const inner = await WebModel.load(data, name, vocabBytes ?? undefined, maxBindingBytes ?? undefined,
      progressHook(onProgress));
    return new Model(inner);
  }

  /** A random model of a named shape ("tiny", "0.1b", ...), as `rwkv synth` makes natively. */
  static async synth(shape = 'tiny', { dtype = 'f32', seed = 0, onProgress, maxBindingBytes } = {}) {
    await initWasm();
    const inner = await WebModel.synth(shape, dtype, seed >>> 0, maxBindingBytes ?? undefined,
      progressHook(onProgress));
    return new Model(inner);
  }

  /** Device, model shape, source, format, vocabulary size. */
  get info() {
    return JSON.parse(this.#inner.info());
  }

  tokenize(text) {
    return this.#inner.tokenize(text);
  }

  detokenize(ids) {
    return this.#inner.detokenize(Uint32Array.from(ids));
  }

  // Calls into the model one at a time (the wasm side rejects overlapping calls).
  #serial(fn) {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Logits after `tokens`, from an empty state: a Float32Array of vocabulary length. */
  logits(tokens) {
    const ids = Uint32Array.from(tokens);
    return this.#serial(() => this.#inner.logits(ids));
  }

  /**
   * Streams text after `prompt`. Ends after `maxTokens`, at the end-of-text token (unless
   * `stopAtEndOfText` is false), on `stop()`, when `signal` aborts, or when another
   * generation starts.
   */
  async *generate(prompt, { maxTokens = 256, temperature = 1.0, topP = 0.85, seed,
    stopAtEndOfText = true, signal } = {}) {
    const id = ++this.#generation;
    const s = seed ?? Math.floor(Math.random() * 2 ** 32);
    await this.#serial(() => this.#inner.begin(prompt, s >>> 0));
    this.#tokens = 0;
    for (let i = 0; i < maxTokens; i++) {
      if (id !== this.#generation || signal?.aborted) return;
      const piece = await this.#serial(() => this.#inner.next(temperature, topP, stopAtEndOfText));
      if (piece === undefined) return;
      this.#tokens++;
      if (piece.length > 0) yield piece;
    }
  }

  /** Tokens sampled so far by the latest generate() (pieces can hold fewer characters). */
  get generatedTokens() {
    return this.#tokens;
  }

  /** Ends the running generation after the token in flight. */
  stop() {
    this.#generation++;
  }
}
