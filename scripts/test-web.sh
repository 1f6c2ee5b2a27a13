#!/usr/bin/env bash
# Browser test of the WebGPU backend: builds web/pkg (scripts/build-web.sh), computes reference
# logits of a tiny synthetic model with the native CPU backend, serves web/ on 127.0.0.1 and
# drives headless Chromium (SwiftShader WebGPU, no GPU needed) through web/test/: the model
# loads through the JS API, its logits match the CPU's, it generates text, and a screenshot is
# saved (web/test/screenshot.png). Prints PASS/FAIL; exits non-zero on failure.
# Installs chromium with apt-get when missing. Env: TEST_WEB_TIMEOUT (s, default 300);
# By default the model is a GGUF file written by `rwkv synth` and read through Model.load (as a
# user's file would be; streamed, so wasm memory must stay below the file's size), then the same
# model as safetensors; TEST_WEB_FILE=0 makes it in the page instead (Model.synth).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    echo "test-web: installing chromium" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    chromium=$(command -v chromium)
fi
command -v node >/dev/null || { echo "test-web: FAIL (node is required)"; exit 1; }

scripts/build-web.sh

# Reference logits from the CPU backend, for fresh random token sequences: a short one (one-token
# steps only) and one longer than the 16-token prefill chunk.
cargo build -q -p rwkv --bin rwkv
rwkv=target/debug/rwkv
seed=$(( (RANDOM << 15) | RANDOM ))
model_seed=7
echo "test-web: token seed $seed"
read -r short long < <(python3 - "$seed" <<'PY'
import random, sys
r = random.Random(int(sys.argv[1]))
print(",".join(str(r.randrange(512)) for _ in range(3)), ",".join(str(r.randrange(512)) for _ in range(21)))
PY
)
out=web/test/expected.json
file_field=""
if [ "${TEST_WEB_FILE:-1}" = 1 ]; then
    "$rwkv" synth --shape tiny --dtype f32 --seed "$model_seed" -o web/test/tiny.gguf
    "$rwkv" synth --shape tiny --dtype f32 --seed "$model_seed" -o web/test/tiny.st
    file_field='"file":"tiny.gguf","file_st":"tiny.st",'
fi
{
    printf '{%s"shape":"tiny","dtype":"f32","seed":%d,"cases":[' "$file_field" "$model_seed"
    "$rwkv" logits -m "synth:tiny:f32:$model_seed" --backend cpu --tokens "$short"
    printf ','
    "$rwkv" logits -m "synth:tiny:f32:$model_seed" --backend cpu --tokens "$long"
    printf ']}\n'
} > "$out.tmp"
python3 - "$out.tmp" "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cases = d.pop("cases")
d["tokens"] = [c["tokens"] for c in cases]
d["logits"] = [c["logits"][-1] for c in cases]
json.dump(d, open(sys.argv[2], "w"))
PY
rm -f "$out.tmp"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" web >/tmp/rwkv-test-web-http.log 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
http.server.SimpleHTTPRequestHandler.extensions_map[".wasm"] = "application/wasm"
http.server.SimpleHTTPRequestHandler.extensions_map[".js"] = "text/javascript"
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
PY
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/test/index.html')" 2>/dev/null && break
    sleep 0.1
done

if ! node web/test/drive.mjs "$chromium" "http://127.0.0.1:$port/test/index.html" web/test/screenshot.png \
    "${TEST_WEB_TIMEOUT:-300}" | sed 's/^test-web: /test-web (API): /'; then
    echo "test-web: FAIL (API test)"
    exit 1
fi

# The demo page: a synthetic model, 8 streamed tokens, a tok/s figure. Greedy (temperature 0):
# with the page's default sampling, a run could draw end-of-text first and stream nothing.
DRIVE_EXPR=$(cat <<'JS'
(async () => {
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  while (!$('synth')) await sleep(50);
  await sleep(500);
  $('synth').click();
  while ($('generate').disabled) {
    if ($('status').className === 'error') return { pass: false, failures: [$('status').textContent] };
    await sleep(100);
  }
  $('max-tokens').value = '8';
  $('temperature').value = '0';
  $('generate').click();
  await sleep(100);
  while ($('generate').disabled) await sleep(100);
  const log = `status: ${$('status').textContent}\noutput: ${JSON.stringify($('output').textContent)}\n` +
    `stats: ${$('stats').textContent}`;
  const failures = [];
  if ($('status').className === 'error') failures.push($('status').textContent);
  if (!$('output').textContent) failures.push('no text streamed');
  if (!/tok\/s/.test($('stats').textContent)) failures.push('no tok/s shown');
  return { pass: failures.length === 0, failures, log };
})()
JS
)
export DRIVE_EXPR
if ! node web/test/drive.mjs "$chromium" "http://127.0.0.1:$port/index.html" web/test/demo.png \
    "${TEST_WEB_TIMEOUT:-300}" | sed 's/^test-web: /test-web (demo page): /'; then
    echo "test-web: FAIL (demo page)"
    exit 1
fi
echo "test-web: PASS"
