// Types of web/rwkv.js.

export interface LoadOptions {
  /** rwkv_vocab_v20230424.txt (or .json) contents; default: the model's own, else bytes. */
  vocab?: Uint8Array | string;
  /** Called with (bytes uploaded, total bytes) while weights go to the GPU. */
  onProgress?: (done: number, total: number) => void;
  /** Name used in error messages. */
  name?: string;
  /** Cap on one GPU buffer (tests of matrix splitting); default: the adapter's limit. */
  maxBindingBytes?: number;
}

export interface SynthOptions {
  dtype?: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4k' | string;
  seed?: number;
  onProgress?: (done: number, total: number) => void;
  maxBindingBytes?: number;
}

export interface GenerateOptions {
  maxTokens?: number;
  /** <= 0: greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop at token 0 (end of text). Default true. */
  stopAtEndOfText?: boolean;
  signal?: AbortSignal;
}

export interface ModelInfo {
  device: { backend: string; device: string; properties: [string, string][] };
  model: {
    version: string; n_layer: number; n_embd: number; head_size: number;
    vocab_size: number; ffn_size: number; lora: { w: number; a: number; v: number; g: number };
  };
  source: string;
  format: string;
  vocab: number;
}

export declare class Model {
  /** GGUF and safetensors are streamed from `bytes`: wasm memory holds about one tensor at a time. */
  static load(bytes: Uint8Array | ArrayBuffer, options?: LoadOptions): Promise<Model>;
  static synth(shape?: string, options?: SynthOptions): Promise<Model>;
  readonly info: ModelInfo;
  tokenize(text: string): Uint32Array;
  detokenize(ids: ArrayLike<number>): string;
  logits(tokens: ArrayLike<number>): Promise<Float32Array>;
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  /** Tokens sampled so far by the latest generate(). */
  readonly generatedTokens: number;
  stop(): void;
}

/**
 * Bytes of the wasm module's linear memory (0 before the first load). Memory only grows, so
 * after a load this is the load's peak; GGUF and safetensors files are streamed to the GPU a
 * tensor at a time, so it stays well below the file's size.
 */
export declare function wasmMemoryBytes(): number;
