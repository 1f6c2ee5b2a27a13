//! `rwkv serve`: an OpenAI-compatible HTTP server over one [`Engine`].
//!
//! - [`routes`]: the endpoints (axum), API key, SSE streaming;
//! - [`wire`]: request/response types, validation, the RWKV World chat template;
//! - [`scheduler`]: the thread that owns the engine (continuous batching, chunked prefill);
//! - [`cache`]: states kept by token prefix (LRU within a byte budget);
//! - [`metrics`]: Prometheus counters, gauges and histograms.

pub mod cache;
pub mod metrics;
pub mod routes;
pub mod scheduler;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::serve::ListenerExt;
use rwkv_core::formats::load_state_file;
use rwkv_core::{Error, Result};
use tokio::sync::oneshot;

use crate::engine::Engine;
use metrics::Metrics;
use routes::AppState;
use scheduler::{NamedState, SchedulerConfig};

/// Everything `rwkv serve` takes besides the model.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Name clients pass as `model`.
    pub model_name: String,
    /// Sequences decoded together; the engine needs this many session slots.
    pub max_batch: usize,
    /// Requests that may wait for a slot; more get 503.
    pub max_queue: usize,
    /// Prompt tokens per prefill step: the longest a prompt may hold up the others' decode.
    pub prefill_chunk: usize,
    /// Longest prompt accepted, in tokens.
    pub max_prompt_tokens: usize,
    /// State cache budget in bytes (0: off).
    pub cache_bytes: usize,
    pub api_key: Option<String>,
    /// `--state NAME=FILE` initial states.
    pub states: Vec<(String, PathBuf)>,
    /// Stop on Ctrl-C / SIGTERM (the CLI); tests stop the server with [`Server::shutdown`].
    pub handle_signals: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: "rwkv".into(),
            max_batch: 64,
            max_queue: 256,
            prefill_chunk: crate::engine::MAX_CHUNK,
            max_prompt_tokens: 16384,
            cache_bytes: 1 << 30,
            api_key: None,
            states: Vec::new(),
            handle_signals: false,
        }
    }
}

/// A running server: its address, and the way to stop it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    pub metrics: Arc<Metrics>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets running requests finish, and waits for everything to end.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    /// Waits until the server stops (a signal when `handle_signals` is set).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::invalid("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.join();
    }
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::io(what, e)
}

/// Loads the `--state` files, binds the address, starts the scheduler and the HTTP server.
/// The engine must have `opts.max_batch` session slots.
pub fn start(engine: Engine, opts: ServeOptions) -> Result<Server> {
    if opts.max_batch == 0 || opts.max_queue == 0 || opts.prefill_chunk == 0 {
        return Err(Error::invalid(
            "max-batch, max-queue and prefill-chunk must be at least 1",
        ));
    }
    if engine.max_sessions() < opts.max_batch {
        return Err(Error::invalid(format!(
            "the engine has {} session slots; max-batch {} needs as many",
            engine.max_sessions(),
            opts.max_batch
        )));
    }
    let mut states = HashMap::new();
    for (name, path) in &opts.states {
        let values = load_state_file(path, engine.desc())?;
        let named = NamedState {
            name: Arc::from(name.as_str()),
            values,
        };
        if states.insert(name.clone(), Arc::new(named)).is_some() {
            return Err(Error::invalid(format!("--state {name} is given twice")));
        }
    }
    let listener = std::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .map_err(|e| io_err(&format!("{}:{}", opts.host, opts.port), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("listener", e))?;
    let addr = listener.local_addr().map_err(|e| io_err("listener", e))?;
    let metrics = Arc::new(Metrics::new());
    let vocab = Arc::new(engine.vocab().clone());
    let vocab_size = engine.desc().vocab_size;
    let (scheduler, sched_thread) = scheduler::start(
        engine,
        SchedulerConfig {
            max_batch: opts.max_batch,
            max_queue: opts.max_queue,
            prefill_chunk: opts.prefill_chunk,
            cache_bytes: opts.cache_bytes,
        },
        Arc::clone(&metrics),
    )
    .map_err(|e| io_err("scheduler thread", e))?;
    let app = Arc::new(AppState {
        scheduler,
        vocab,
        vocab_size,
        model_name: opts.model_name.clone(),
        api_key: opts.api_key.clone(),
        metrics: Arc::clone(&metrics),
        states,
        max_prompt_tokens: opts.max_prompt_tokens,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: AtomicU64::new(0),
    });
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let handle_signals = opts.handle_signals;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rwkv-http")
        .enable_all()
        .build()
        .map_err(|e| io_err("tokio runtime", e))?;
    let thread = std::thread::Builder::new()
        .name("rwkv-serve".into())
        .spawn(move || -> Result<()> {
            let served = runtime.block_on(async move {
                // Streamed tokens are small writes: without TCP_NODELAY, Nagle's algorithm
                // holds each one back until the previous is acknowledged.
                let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let router = routes::router(app);
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop_signal(shutdown_rx, handle_signals))
                    .await
            });
            // Every connection is closed and the router (holding the scheduler handle) is
            // gone: the scheduler finishes what it accepted and returns.
            let _engine = sched_thread
                .join()
                .map_err(|_| Error::invalid("the scheduler thread panicked"))?;
            served.map_err(|e| io_err("http server", e))
        })
        .map_err(|e| io_err("server thread", e))?;
    Ok(Server {
        addr,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
        metrics,
    })
}

/// Resolves on `shutdown` or, when `signals`, on Ctrl-C / SIGTERM.
async fn stop_signal(shutdown: oneshot::Receiver<()>, signals: bool) {
    if !signals {
        let _ = shutdown.await;
        return;
    }
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = shutdown => {}
        _ = ctrl_c => eprintln!("rwkv serve: stopping (Ctrl-C); finishing running requests"),
        _ = term => eprintln!("rwkv serve: stopping (SIGTERM); finishing running requests"),
    }
}

/// The CLI's entry: starts the server, prints where it listens, waits for Ctrl-C / SIGTERM.
pub fn run(engine: Engine, opts: ServeOptions) -> Result<()> {
    let backend = engine.backend_choice().to_string();
    let opts = ServeOptions {
        handle_signals: true,
        ..opts
    };
    let server = start(engine, opts.clone())?;
    eprintln!("rwkv serve: listening on http://{}/v1", server.addr());
    eprintln!("  model {} on {backend}", opts.model_name);
    eprintln!(
        "  limits: batch {}, queue {}, prompt {} tokens, output {} tokens, body {} bytes, prefill chunk {}, state cache {} bytes{}",
        opts.max_batch,
        opts.max_queue,
        opts.max_prompt_tokens,
        wire::MAX_TOKENS_CAP,
        routes::MAX_BODY_BYTES,
        opts.prefill_chunk,
        opts.cache_bytes,
        if opts.api_key.is_some() { ", API key required" } else { "" }
    );
    for (name, path) in &opts.states {
        eprintln!("  state '{name}' from {}", path.display());
    }
    server.wait()
}
