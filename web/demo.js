// The demo page: pick a model file, watch it upload, generate streaming text.
import { Model } from './rwkv.js';

const $ = (id) => document.getElementById(id);
let model = null;

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

function mib(bytes) {
  return (bytes / 2 ** 20).toFixed(1) + ' MiB';
}

async function open(loader, label) {
  $('generate').disabled = true;
  model = null;
  const t0 = performance.now();
  try {
    model = await loader((done, total) => {
      $('progress').value = total > 0 ? done / total : 0;
      status(`${label}: ${mib(done)} of ${mib(total)} on the GPU`);
    });
    const info = model.info;
    const m = info.model;
    const api = info.device.properties.find(([k]) => k === 'api')?.[1] ?? 'WebGPU';
    status(`${label}: ${m.n_layer} layers, width ${m.n_embd}, vocabulary ${m.vocab_size} on ` +
      `${info.device.device || 'an unnamed adapter'} (${api}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    $('progress').value = 1;
    $('generate').disabled = false;
  } catch (e) {
    status(`${label}: ${e.message ?? e}`, true);
  }
}

if (!navigator.gpu) status('This browser has no WebGPU (navigator.gpu is missing).', true);

$('model-file').addEventListener('change', async () => {
  const file = $('model-file').files[0];
  if (!file) return;
  const vocabFile = $('vocab-file').files[0];
  status(`reading ${file.name} ...`);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const vocab = vocabFile ? new Uint8Array(await vocabFile.arrayBuffer()) : undefined;
  await open((onProgress) => Model.load(bytes, { vocab, onProgress, name: file.name }), file.name);
});

$('synth').addEventListener('click', () =>
  open((onProgress) => Model.synth('tiny', { seed: 7, onProgress }), 'synthetic tiny model'));

$('generate').addEventListener('click', async () => {
  if (!model) return;
  $('generate').disabled = true;
  $('stop').disabled = false;
  $('output').textContent = '';
  const opts = {
    maxTokens: Number($('max-tokens').value) || 128,
    temperature: Number($('temperature').value),
    topP: Number($('top-p').value),
  };
  const prompt = $('prompt').value;
  let t0 = null;
  let first = 0;
  const showStats = () => {
    // The first token includes the prompt's prefill; tok/s counts the tokens after it.
    const n = model.generatedTokens;
    if (t0 === null) {
      t0 = performance.now();
      first = n;
      return;
    }
    const secs = (performance.now() - t0) / 1000;
    if (n > first) $('stats').textContent = `${n} tokens, ${((n - first) / secs).toFixed(1)} tok/s`;
  };
  try {
    for await (const piece of model.generate(prompt, opts)) {
      showStats();
      $('output').textContent += piece;
    }
    showStats();
  } catch (e) {
    status(`generation failed: ${e.message ?? e}`, true);
  }
  $('generate').disabled = false;
  $('stop').disabled = true;
});

$('stop').addEventListener('click', () => model?.stop());
