//! The scheduler: one thread owns the [`Engine`] and runs continuous batching. Each turn of its
//! loop it admits waiting requests into free state slots (starting from a cached state where one
//! covers a prefix of the prompt), drops requests whose client went away, feeds one prefill
//! chunk of one prompt, then runs one decode step for every sequence that has a token to feed.
//! So a long prompt delays the others' next token by at most one chunk, a new request joins the
//! decode batch at the step after its prefill, and a finished or cancelled one leaves at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use rwkv_core::sampler::{Sampler, SamplerParams, StopMatcher};
use rwkv_core::tokenizer::Vocab;
use tokio::sync::mpsc;

use super::cache::StateCache;
use super::metrics::Metrics;
use crate::engine::{Engine, Session};

/// The end-of-text token: generation stops when it is sampled (RWKV World vocabularies).
const END_OF_TEXT: u32 = 0;

/// An initial state loaded with `--state NAME=FILE`.
pub struct NamedState {
    pub name: Arc<str>,
    pub values: Vec<f32>,
}

/// One request, validated and tokenized.
pub struct Job {
    pub prompt: Vec<u32>,
    pub initial_state: Option<Arc<NamedState>>,
    pub params: SamplerParams,
    pub logit_bias: Vec<(u32, f32)>,
    pub stop: StopMatcher,
    pub max_tokens: usize,
    /// Chat answers follow "Assistant:"; the space the model writes first is not content.
    pub trim_leading_space: bool,
    /// Treat the end-of-text token as text (load tests want a fixed output length).
    pub ignore_eos: bool,
    pub events: mpsc::UnboundedSender<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop string or the end-of-text token.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens covered by a cached state.
    pub cached_tokens: usize,
}

/// What a request's receiver gets, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: FinishReason,
        usage: Usage,
    },
    Failed(String),
}

/// The queue is full: answer 503.
#[derive(Debug)]
pub struct QueueFull;

/// The HTTP side's end: submits jobs, bounded by `max_queue` waiting ones.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: std_mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    metrics: Arc<Metrics>,
}

impl SchedulerHandle {
    /// Queues a job unless `max_queue` jobs already wait. An accepted job is always run (or
    /// cancelled when its receiver is dropped).
    pub fn submit(&self, job: Job) -> Result<(), QueueFull> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.requests_rejected.inc();
            return Err(QueueFull);
        }
        self.metrics.queue_depth.set(before as i64 + 1);
        if self.tx.send(job).is_err() {
            // The scheduler has stopped (shutdown): nothing will run this job.
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(QueueFull);
        }
        Ok(())
    }
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences decoded together (the engine must have this many session slots).
    pub max_batch: usize,
    /// Requests that may wait for a slot before new ones get 503.
    pub max_queue: usize,
    /// Prompt tokens fed per prefill step.
    pub prefill_chunk: usize,
    /// State cache budget in bytes (0: off).
    pub cache_bytes: usize,
}

/// Starts the scheduler thread; it runs until every [`SchedulerHandle`] is dropped and all
/// accepted work is done, then returns the engine.
pub fn start(
    engine: Engine,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SchedulerHandle, std::thread::JoinHandle<Engine>)> {
    let (tx, rx) = std_mpsc::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let handle = SchedulerHandle {
        tx,
        waiting: Arc::clone(&waiting),
        max_queue: config.max_queue,
        metrics: Arc::clone(&metrics),
    };
    let vocab = engine.vocab().clone();
    let sched = Scheduler {
        cache: StateCache::new(config.cache_bytes),
        engine,
        vocab,
        config,
        metrics,
        waiting_count: waiting,
        waiting: VecDeque::new(),
        running: Vec::new(),
    };
    let join = std::thread::Builder::new()
        .name("rwkv-scheduler".into())
        .spawn(move || sched.run(rx))?;
    Ok((handle, join))
}

/// A request holding a state slot.
struct Seq {
    job: Job,
    session: Session,
    sampler: Sampler,
    /// Prompt tokens still to feed (from `fed` on).
    fed: usize,
    cached_tokens: usize,
    generated: Vec<u32>,
    /// The last sampled token, to be fed in the next decode step.
    next_token: Option<u32>,
    accepted_at: Instant,
    last_token_at: Option<Instant>,
    /// Plain greedy (no penalties or bias): the device's argmax can pick its tokens.
    plain_greedy: bool,
    ended_by_eos: bool,
}

impl Seq {
    fn prefilling(&self) -> bool {
        self.fed < self.job.prompt.len()
    }
}

struct Scheduler {
    engine: Engine,
    vocab: Vocab,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    cache: StateCache,
    waiting_count: Arc<AtomicUsize>,
    waiting: VecDeque<(Job, Instant)>,
    running: Vec<Seq>,
}

/// What happened to a sequence after a token.
enum Step {
    Continue,
    Finished(FinishReason),
}

impl Scheduler {
    fn run(mut self, rx: std_mpsc::Receiver<Job>) -> Engine {
        let mut open = true;
        loop {
            // Block only when there is nothing to do.
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(job) => self.waiting.push_back((job, Instant::now())),
                    Err(_) => break,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(job) => self.waiting.push_back((job, Instant::now())),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_cancelled();
            self.admit();
            self.prefill_one_chunk();
            self.decode_step();
            self.metrics.running.set(self.running.len() as i64);
        }
        self.engine
    }

    fn dequeued(&mut self) {
        let before = self.waiting_count.fetch_sub(1, Ordering::SeqCst);
        self.metrics
            .queue_depth
            .set(before.saturating_sub(1) as i64);
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|(j, _)| !j.events.is_closed());
        for _ in self.waiting.len()..before {
            self.dequeued();
            self.metrics.requests_cancelled.inc();
        }
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].job.events.is_closed() {
                let seq = self.running.remove(i);
                self.metrics.requests_cancelled.inc();
                self.engine.close_session(seq.session);
            } else {
                i += 1;
            }
        }
    }

    /// Moves waiting jobs into free slots, restoring a cached or named initial state.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch {
            let Some((job, accepted_at)) = self.waiting.pop_front() else {
                break;
            };
            self.dequeued();
            if job.prompt.is_empty() {
                // Nothing to sample from; the HTTP side never sends this.
                self.fail(&job, "empty prompt");
                continue;
            }
            let mut session = match self.engine.new_session() {
                Ok(s) => s,
                Err(e) => {
                    self.fail(&job, &e.to_string());
                    continue;
                }
            };
            let base = job.initial_state.as_ref().map(|s| &*s.name);
            let mut fed = 0;
            let mut first_logits = None;
            let restored = match self.cache.lookup(base, &job.prompt) {
                Some(hit) => {
                    self.metrics.cache_hits.inc();
                    fed = hit.len;
                    first_logits = hit.logits.map(<[f32]>::to_vec);
                    self.engine.restore_state(&mut session, hit.state)
                }
                None => {
                    self.metrics.cache_misses.inc();
                    match &job.initial_state {
                        Some(s) => self.engine.restore_state(&mut session, &s.values),
                        None => Ok(()), // new sessions start from zeros
                    }
                }
            };
            if let Err(e) = restored {
                self.engine.close_session(session);
                self.fail(&job, &e.to_string());
                continue;
            }
            self.metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
            self.metrics.cached_prompt_tokens.inc_by(fed as u64);
            let plain_greedy = job.params.temperature <= 0.0
                && job.logit_bias.is_empty()
                && job.params.presence_penalty == 0.0
                && job.params.frequency_penalty == 0.0;
            let sampler = Sampler::new(job.params).with_logit_bias(job.logit_bias.clone());
            let mut seq = Seq {
                job,
                session,
                sampler,
                fed,
                cached_tokens: fed,
                generated: Vec::new(),
                next_token: None,
                accepted_at,
                last_token_at: None,
                plain_greedy,
                ended_by_eos: false,
            };
            if let Some(logits) = first_logits {
                // The whole prompt was cached with its logits: sample right away.
                match self.after_logits(&mut seq, &logits) {
                    Step::Continue => self.running.push(seq),
                    Step::Finished(r) => self.finish(seq, r, Some(logits)),
                }
            } else {
                self.running.push(seq);
            }
        }
    }

    /// Feeds the next chunk of the oldest prompt still prefilling.
    fn prefill_one_chunk(&mut self) {
        let Some(i) = self.running.iter().position(Seq::prefilling) else {
            return;
        };
        let seq = &mut self.running[i];
        let end = (seq.fed + self.config.prefill_chunk).min(seq.job.prompt.len());
        let result = self
            .engine
            .feed(&mut seq.session, &seq.job.prompt[seq.fed..end]);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let seq = self.running.remove(i);
                self.fail(&seq.job, &e.to_string());
                self.engine.close_session(seq.session);
                return;
            }
        };
        seq.fed = end;
        if seq.prefilling() {
            return;
        }
        // The prompt is in: keep its state for later prompts that start with it.
        if self.config.cache_bytes > 0 && seq.cached_tokens < seq.job.prompt.len() {
            if let Ok(state) = self.engine.save_state(&seq.session) {
                self.cache.insert(
                    seq.job.initial_state.as_ref().map(|s| Arc::clone(&s.name)),
                    seq.job.prompt.clone(),
                    state,
                    Some(logits.clone()),
                );
            }
        }
        let mut seq = self.running.remove(i);
        match self.after_logits(&mut seq, &logits) {
            Step::Continue => self.running.push(seq),
            Step::Finished(r) => self.finish(seq, r, Some(logits)),
        }
    }

    /// One token for every sequence that has one to feed.
    fn decode_step(&mut self) {
        let (mut ready, rest): (Vec<Seq>, Vec<Seq>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| s.next_token.is_some());
        self.running = rest;
        if ready.is_empty() {
            return;
        }
        let tokens: Vec<u32> = ready.iter().filter_map(|s| s.next_token).collect();
        // The device's argmax cannot skip ids without text: a byte-level vocabulary (synthetic
        // models) has tens of thousands, so its greedy steps pick on the host like the rest.
        let all_greedy =
            ready.iter().all(|s| s.plain_greedy) && !self.engine.vocab().is_byte_level();
        let v = self.engine.desc().vocab_size;
        let result = {
            let mut sessions: Vec<&mut Session> =
                ready.iter_mut().map(|s| &mut s.session).collect();
            if all_greedy {
                self.engine
                    .feed_batch_argmax(&mut sessions, &tokens)
                    .map(|ids| (Some(ids), None))
            } else {
                self.engine
                    .feed_batch(&mut sessions, &tokens)
                    .map(|logits| (None, Some(logits)))
            }
        };
        match result {
            Err(e) => {
                let msg = e.to_string();
                for seq in ready {
                    self.fail(&seq.job, &msg);
                    self.engine.close_session(seq.session);
                }
            }
            Ok((ids, mut logits)) => {
                if let Some(l) = logits.as_mut() {
                    l.chunks_mut(v)
                        .for_each(|row| self.engine.mask_textless(row));
                }
                let picks = match (ids, &logits) {
                    (Some(ids), _) => {
                        for (seq, &id) in ready.iter_mut().zip(&ids) {
                            seq.sampler.record(id);
                        }
                        ids
                    }
                    (None, Some(l)) => sample_all(&mut ready, l, v),
                    (None, None) => vec![END_OF_TEXT; ready.len()], // not reached
                };
                for (i, mut seq) in ready.into_iter().enumerate() {
                    seq.next_token = None;
                    let row = logits.as_ref().map(|l| &l[i * v..(i + 1) * v]);
                    let step = self.after_token(&mut seq, picks[i]);
                    match step {
                        Step::Continue => self.running.push(seq),
                        Step::Finished(r) => self.finish(seq, r, row.map(<[f32]>::to_vec)),
                    }
                }
            }
        }
    }

    fn after_logits(&mut self, seq: &mut Seq, logits: &[f32]) -> Step {
        // Ids without text are never picked (as Engine::generate does).
        let mut masked = logits.to_vec();
        self.engine.mask_textless(&mut masked);
        let token = seq.sampler.sample(&masked);
        self.after_token(seq, token)
    }

    /// Streams a sampled token's text and decides whether the sequence goes on.
    fn after_token(&mut self, seq: &mut Seq, token: u32) -> Step {
        let now = Instant::now();
        match seq.last_token_at {
            None => self
                .metrics
                .time_to_first_token
                .observe((now - seq.accepted_at).as_secs_f64()),
            Some(t) => self
                .metrics
                .inter_token_latency
                .observe((now - t).as_secs_f64()),
        }
        seq.last_token_at = Some(now);
        if token == END_OF_TEXT && !seq.job.ignore_eos {
            seq.ended_by_eos = true;
            return Step::Finished(FinishReason::Stop);
        }
        seq.generated.push(token);
        self.metrics.generated_tokens.inc();
        let bytes = self.vocab.token_bytes(token).unwrap_or(&[]);
        let released = seq.job.stop.push(bytes);
        send_text(seq, &released.bytes);
        if released.stopped {
            return Step::Finished(FinishReason::Stop);
        }
        if seq.generated.len() >= seq.job.max_tokens {
            return Step::Finished(FinishReason::Length);
        }
        seq.next_token = Some(token);
        Step::Continue
    }

    /// Ends a sequence: flushes held text, reports usage, keeps the state for a follow-up
    /// prompt that continues this text, frees the slot.
    fn finish(&mut self, mut seq: Seq, reason: FinishReason, last_logits: Option<Vec<f32>>) {
        if !seq.job.stop.is_stopped() {
            // Ended by length or end-of-text: text held as a possible stop start is real text.
            let rest = seq.job.stop.finish();
            send_text(&mut seq, &rest);
        }
        let usage = Usage {
            prompt_tokens: seq.job.prompt.len(),
            completion_tokens: seq.generated.len(),
            cached_tokens: seq.cached_tokens,
        };
        // Counted before the answer goes out, so a client that reads /metrics next sees it.
        self.metrics.requests_finished.inc();
        let _ = seq.job.events.send(Event::Done {
            finish_reason: reason,
            usage,
        });
        // The state now covers the prompt and every generated token but the last sampled one
        // (never fed; the end-of-text token is not in `generated`), and `last_logits` came after
        // them: exactly what a next turn that continues this text starts from.
        let fed_generated = if seq.ended_by_eos {
            seq.generated.len()
        } else {
            seq.generated.len().saturating_sub(1)
        };
        if self.config.cache_bytes > 0 && fed_generated > 0 {
            if let Ok(state) = self.engine.save_state(&seq.session) {
                let n = fed_generated;
                let mut tokens = seq.job.prompt.clone();
                tokens.extend_from_slice(&seq.generated[..n]);
                self.cache.insert(
                    seq.job.initial_state.as_ref().map(|s| Arc::clone(&s.name)),
                    tokens,
                    state,
                    last_logits,
                );
            }
        }
        self.engine.close_session(seq.session);
    }

    fn fail(&self, job: &Job, message: &str) {
        self.metrics.requests_failed.inc();
        let _ = job.events.send(Event::Failed(message.to_string()));
    }
}

/// Samples every sequence's next token from its row of `logits`. Sampling a 65536-token row
/// with top-p takes most of a millisecond, which at 64 sequences would outlast a GPU step, so
/// the rows are split over threads (each sequence's sampler is its own; results do not depend
/// on the split).
fn sample_all(seqs: &mut [Seq], logits: &[f32], vocab: usize) -> Vec<u32> {
    let mut picks = vec![END_OF_TEXT; seqs.len()];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below a few rows per thread, spawning costs more than it saves.
    let threads = cores.min(seqs.len() / 4).max(1);
    let per = seqs.len().div_ceil(threads);
    let sample_part = |part: &mut [Seq], out: &mut [u32], rows: &[f32]| {
        for ((seq, o), row) in part.iter_mut().zip(out).zip(rows.chunks(vocab)) {
            *o = seq.sampler.sample(row);
        }
    };
    if threads == 1 {
        sample_part(seqs, &mut picks, logits);
        return picks;
    }
    std::thread::scope(|scope| {
        for ((part, out), rows) in seqs
            .chunks_mut(per)
            .zip(picks.chunks_mut(per))
            .zip(logits.chunks(per * vocab))
        {
            scope.spawn(move || sample_part(part, out, rows));
        }
    });
    picks
}

fn send_text(seq: &mut Seq, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if seq.job.trim_leading_space {
        if let Some(rest) = text.strip_prefix(' ') {
            text = rest.to_string();
        }
        seq.job.trim_leading_space = false;
    }
    if !text.is_empty() {
        let _ = seq.job.events.send(Event::Text(text));
    }
}
