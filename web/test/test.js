// Browser side of scripts/test-web.sh: loads the tiny model through the JS API (streamed: wasm
// memory stays below the file's size), compares its logits with the CPU backend's (expected.json,
// written natively), generates text, loads the same model from safetensors, and leaves the
// verdict in window.__rwkvTest (a promise the driver awaits) and in the page.
import { Model, wasmMemoryBytes } from '../rwkv.js';

const logEl = document.getElementById('log');
const log = (line) => { logEl.textContent += line + '\n'; };

// Logits of the WebGPU backend vs the f32 CPU reference: both compute in f32, so they differ
// only by summation order and the shader's exp/tanh (a few ULP per the WGSL spec). Bound: 2e-4,
// the one rwkv-wgpu's native model tests use against CpuBackend (measured there: <= 6e-6; here
// in SwiftShader: ~8e-6). A missing or wrong op moves logits by ~1e-1 and fails it.
const TOLERANCE = 2e-4;

async function run() {
  const failures = [];
  const expected = await (await fetch('./expected.json')).json();
  const params = new URLSearchParams(location.search);
  const t0 = performance.now();
  let progressCalls = 0;
  const onProgress = () => { progressCalls++; };
  // A small binding cap (768 KiB) splits the 1 MiB channel-mix matrices over two GPU buffers, as
  // the browser's 128 MiB default does for real models.
  const maxBindingBytes = Number(params.get('maxBinding') ?? 786432);
  let model;
  let fileBytes = 0;
  if (expected.file) {
    const bytes = new Uint8Array(await (await fetch('./' + expected.file)).arrayBuffer());
    model = await Model.load(bytes, { onProgress, name: expected.file, maxBindingBytes });
    fileBytes = bytes.length;
    // The file is 8 MB, its largest tensor 1 MB: streamed, wasm memory (which only grows, so
    // this is the load's peak) holds the header and about one tensor at a time plus the runtime,
    // ~3.4 MB; copied whole into wasm memory, as before streaming, it was ~10.7 MB.
    const memory = wasmMemoryBytes();
    log(`wasm memory after load: ${memory} bytes, file ${fileBytes} bytes`);
    if (!(memory > 0 && memory < fileBytes)) {
      failures.push(`wasm memory ${memory} bytes after load, not below the file's ${fileBytes}`);
    }
  } else {
    model = await Model.synth(expected.shape, { dtype: expected.dtype, seed: expected.seed, onProgress,
      maxBindingBytes });
  }
  const info = model.info;
  log(`loaded ${info.source} (${info.format}) in ${((performance.now() - t0) / 1000).toFixed(2)} s on ` +
    `${info.device.device}; ${progressCalls} progress calls`);
  log(`device: ${JSON.stringify(info.device.properties)}`);
  if (progressCalls < 2) failures.push('no load progress reported');

  for (const [k, tokens] of expected.tokens.entries()) {
    const want = expected.logits[k];
    const got = await model.logits(tokens);
    if (got.length !== want.length) {
      failures.push(`case ${k}: ${got.length} logits, expected ${want.length}`);
      continue;
    }
    let maxDiff = 0;
    let argGot = 0;
    let argWant = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
      if (got[i] > got[argGot]) argGot = i;
      if (want[i] > want[argWant]) argWant = i;
    }
    log(`logits after ${tokens.length} tokens: max |webgpu - cpu| = ${maxDiff.toExponential(2)}, ` +
      `argmax ${argGot} (cpu ${argWant})`);
    if (!(maxDiff <= TOLERANCE)) failures.push(`case ${k}: max diff ${maxDiff} > ${TOLERANCE}`);
    if (argGot !== argWant) failures.push(`case ${k}: argmax ${argGot} != ${argWant}`);
  }

  // Generation: greedy text is deterministic; it must equal the greedy continuation computed
  // from logits (one full re-run per token, through the same API).
  const prompt = 'Hello';
  // 10 tokens: prompt + output stay under the 16-token prefill chunk, so both paths run the
  // same one-token plan and agree bit for bit.
  const n = 10;
  let text = '';
  const t1 = performance.now();
  for await (const piece of model.generate(prompt, { maxTokens: n, temperature: 0, stopAtEndOfText: false })) {
    text += piece;
  }
  const secs = (performance.now() - t1) / 1000;
  if (model.generatedTokens !== n) failures.push(`generatedTokens ${model.generatedTokens}, expected ${n}`);
  document.getElementById('text').textContent = prompt + text;
  log(`greedy generate: ${JSON.stringify(text)} (${n} tokens in ${secs.toFixed(2)} s, ${(n / secs).toFixed(1)} tok/s)`);
  const ids = Array.from(model.tokenize(prompt));
  const greedy = [];
  for (let i = 0; i < n; i++) {
    const l = await model.logits(ids.concat(greedy));
    let best = 0;
    for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
    greedy.push(best);
  }
  const greedyText = model.detokenize(greedy);
  // The stream holds back a character split over tokens at the end; detokenize does not.
  const agrees = greedyText.startsWith(text) && greedyText.length - text.length <= 1;
  if (!agrees) failures.push(`generate gave ${JSON.stringify(text)}, logits say ${JSON.stringify(greedyText)}`);
  if (text.length === 0) failures.push('generate produced no text');

  // Sampling with stop(): at most the tokens before the stop.
  let pieces = 0;
  for await (const piece of model.generate(prompt, { maxTokens: 50, temperature: 1, topP: 0.9, seed: 3,
    stopAtEndOfText: false })) {
    pieces += piece.length > 0 ? 1 : 0;
    if (pieces === 3) model.stop();
  }
  log(`sampled with stop() after 3 pieces: got ${pieces}`);
  if (pieces !== 3) failures.push(`stop(): ${pieces} pieces`);

  // The same model from safetensors (also streamed) gives the same logits.
  if (expected.file_st) {
    const bytes = new Uint8Array(await (await fetch('./' + expected.file_st)).arrayBuffer());
    const st = await Model.load(bytes, { name: expected.file_st, maxBindingBytes });
    const [fromGguf, fromSt] = [await model.logits(expected.tokens[0]), await st.logits(expected.tokens[0])];
    let maxDiff = 0;
    for (let i = 0; i < fromGguf.length; i++) maxDiff = Math.max(maxDiff, Math.abs(fromGguf[i] - fromSt[i]));
    const memory = wasmMemoryBytes();
    log(`${expected.file_st} (${st.info.format}): max |gguf - st| = ${maxDiff.toExponential(2)}; ` +
      `wasm memory now ${memory} bytes`);
    if (st.info.format !== 'safetensors') failures.push(`${expected.file_st} loaded as ${st.info.format}`);
    if (fromSt.length !== fromGguf.length || !(maxDiff <= TOLERANCE)) {
      failures.push(`safetensors logits differ from GGUF's by ${maxDiff}`);
    }
    if (!(memory < fileBytes)) failures.push(`wasm memory ${memory} bytes after two loads`);
  }

  // Overlapping calls are queued, not interleaved: same logits as one at a time.
  const [a, b] = await Promise.all([model.logits([5, 6, 7]), model.logits([5, 6, 7])]);
  if (a.some((v, i) => v !== b[i])) failures.push('concurrent logits calls differ');

  // Hostile input fails cleanly.
  try {
    await model.logits([info.model.vocab_size + 5]);
    failures.push('out-of-vocabulary token accepted');
  } catch (e) {
    log(`out-of-vocabulary token rejected: ${e.message}`);
  }
  try {
    await Model.load(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), { name: 'junk.bin' });
    failures.push('junk bytes loaded as a model');
  } catch (e) {
    log(`junk file rejected: ${e.message}`);
  }
  return failures;
}

window.__rwkvTest = run().then(
  (failures) => ({ pass: failures.length === 0, failures, log: logEl.textContent }),
  (e) => ({ pass: false, failures: [`exception: ${e?.stack ?? e}`], log: logEl.textContent }),
).then((r) => {
  const v = document.getElementById('verdict');
  v.textContent = `rwkv-web test: ${r.pass ? 'PASS' : 'FAIL'}`;
  v.className = r.pass ? 'PASS' : 'FAIL';
  for (const f of r.failures) log('FAILURE: ' + f);
  return r;
});
