// Drives headless Chromium over the DevTools protocol (on a pipe: node built-ins only):
// opens the test page, awaits window.__rwkvTest, saves a screenshot, prints the verdict.
// Usage: node drive.mjs <chromium> <url> <screenshot.png> <timeout_s> [extra chromium flags...]
// DRIVE_EXPR (env): the promise to await instead of window.__rwkvTest; it must resolve to
// { pass, failures, log }.
import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [chromium, url, shotPath, timeoutS, ...extra] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'rwkv-web-chromium-'));
const flags = [
  '--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader',
  '--use-angle=swiftshader', '--disable-gpu-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`,
  '--remote-debugging-pipe', '--window-size=1000,900', ...extra, 'about:blank',
];
// fd 3: commands to Chromium, fd 4: its replies; messages end with a NUL byte.
const browser = spawn(chromium, flags, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let stderr = '';
browser.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];

let nextId = 1;
const waiting = new Map();
const consoleLines = [];
let buffered = '';
fromBrowser.on('data', (chunk) => {
  buffered += chunk.toString('utf8');
  let end;
  while ((end = buffered.indexOf('\0')) >= 0) {
    const msg = JSON.parse(buffered.slice(0, end));
    buffered = buffered.slice(end + 1);
    if (msg.id && waiting.has(msg.id)) {
      const { resolve, reject } = waiting.get(msg.id);
      waiting.delete(msg.id);
      if (msg.error) reject(new Error(JSON.stringify(msg.error)));
      else resolve(msg.result);
    } else if (msg.method === 'Runtime.consoleAPICalled') {
      consoleLines.push(msg.params.args.map((a) => a.value ?? a.description ?? '').join(' '));
    } else if (msg.method === 'Runtime.exceptionThrown') {
      consoleLines.push('exception: ' + (msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text));
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  toBrowser.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}

function finish(code, line) {
  console.log(line);
  browser.kill('SIGKILL');
  process.exit(code);
}

const timer = setTimeout(() => {
  console.log('console:\n' + consoleLines.join('\n'));
  finish(1, `test-web: FAIL (no verdict within ${timeoutS} s)\nchromium stderr tail:\n${stderr}`);
}, Number(timeoutS) * 1000);

try {
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  const { sessionId } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
  await send('Runtime.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  await send('Page.navigate', { url }, sessionId);
  // The module script may not have run yet: wait for the promise to exist, then await it.
  const expr = process.env.DRIVE_EXPR ??
    `(async () => { while (!window.__rwkvTest) await new Promise(r => setTimeout(r, 50));
                    return await window.__rwkvTest; })()`;
  const res = await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true }, sessionId);
  const verdict = res.result.value ?? { pass: false, failures: ['no result: ' + JSON.stringify(res)] };
  const shot = await send('Page.captureScreenshot', { format: 'png' }, sessionId);
  writeFileSync(shotPath, Buffer.from(shot.data, 'base64'));
  clearTimeout(timer);
  console.log(verdict.log ?? '');
  if (consoleLines.length) console.log('console:\n' + consoleLines.join('\n'));
  console.log(`screenshot: ${shotPath}`);
  finish(verdict.pass ? 0 : 1, verdict.pass ? 'test-web: PASS' : `test-web: FAIL\n${verdict.failures.join('\n')}`);
} catch (e) {
  finish(1, `test-web: FAIL (driver: ${e.message})\nchromium stderr tail:\n${stderr}`);
}
