//! Micro-batching: requests put decoded images into a bounded queue; one worker thread takes up
//! to `max_batch` of them, waiting at most `max_wait` after the first, and captions each group of
//! jobs with the same settings in one encoder and one decoder pass.
//!
//! The model is CPU-bound, so it runs on its own `std::thread`, never on the async executor.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use captioner_generate::pipeline::Captioned;
use captioner_generate::GenerateConfig;
use image::RgbImage;
use tokio::sync::oneshot;

use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::model::Model;

/// One image waiting to be captioned.
pub struct Job {
    /// Decoded and resized.
    pub image: RgbImage,
    /// Settings (`return_attention` as the client asked).
    pub config: GenerateConfig,
    /// When it entered the queue.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

/// The worker's answer to one [`Job`].
pub struct JobOutput {
    /// The caption and everything about it.
    pub captioned: Captioned,
    /// Time spent waiting in the queue.
    pub queued: Duration,
    /// Time of the batch's `caption_images` call.
    pub caption: Duration,
    /// Images in that batch (all groups of it).
    pub batch_size: usize,
}

/// Why a job was not queued.
pub enum SubmitError {
    /// The queue holds `capacity` jobs already.
    Full,
    /// The worker has stopped (shutting down).
    Closed,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most images per batch.
    pub max_batch: usize,
    /// Longest wait for more images after the first one arrives.
    pub max_wait: Duration,
    /// Most images waiting in the queue.
    pub queue: usize,
}

/// The queue's sending side and the worker thread.
pub struct Batcher {
    sender: Mutex<Option<SyncSender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the worker thread.
    pub fn start(
        captioner: Arc<Model>,
        config: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        if config.max_batch == 0 || config.queue == 0 {
            return Err(ServeError::Config(
                "the batch size and the queue capacity must be at least 1".into(),
            ));
        }
        let (sender, receiver) = mpsc::sync_channel(config.queue);
        metrics.set_queue_capacity(config.queue);
        let worker_metrics = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("captioner-worker".into())
            .spawn(move || run_worker(&captioner, receiver, config, &worker_metrics))
            .map_err(|e| ServeError::Worker(format!("cannot start the thread: {e}")))?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
            capacity: config.queue,
            metrics,
        })
    }

    /// Most jobs the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a job without waiting: a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = guard.as_ref() else {
            return Err(SubmitError::Closed);
        };
        // Counted before sending so the worker's decrement never comes first.
        self.metrics.add_queue_depth(1);
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.add_queue_depth(-1);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }

    /// Stops taking jobs, lets the worker finish those queued, and waits for it.
    pub fn shutdown(&self) -> Result<(), ServeError> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            worker
                .join()
                .map_err(|_| ServeError::Worker("the thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the channel ends the worker; it is not joined here (a drop must not block).
        self.sender
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// Takes the next batch: blocks for the first job, then waits at most `max_wait` for more.
/// `None` once the queue is closed and empty.
fn next_batch(receiver: &Receiver<Job>, config: &BatchConfig) -> Option<Vec<Job>> {
    let first = receiver.recv().ok()?;
    let deadline = Instant::now() + config.max_wait;
    let mut batch = vec![first];
    while batch.len() < config.max_batch {
        // Whatever is already queued joins without waiting.
        match receiver.try_recv() {
            Ok(job) => {
                batch.push(job);
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match receiver.recv_timeout(deadline - now) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn run_worker(captioner: &Model, receiver: Receiver<Job>, config: BatchConfig, metrics: &Metrics) {
    while let Some(batch) = next_batch(&receiver, &config) {
        metrics.add_queue_depth(-(batch.len() as i64));
        // A client that gave up (timeout, closed connection) is not worth a caption.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        run_batch(captioner, batch, metrics);
    }
    tracing::debug!("captioning worker stopped");
}

/// The settings that decide whether two jobs can share a decoder pass (attention is only extra
/// output: a group returns it when any of its jobs asks, and the others drop it).
fn group_key(config: &GenerateConfig) -> GenerateConfig {
    GenerateConfig {
        return_attention: false,
        ..config.clone()
    }
}

fn run_batch(captioner: &Model, batch: Vec<Job>, metrics: &Metrics) {
    let batch_size = batch.len();
    let mut groups: Vec<(GenerateConfig, Vec<Job>)> = Vec::new();
    for job in batch {
        let key = group_key(&job.config);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, jobs)) => jobs.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    metrics.record_batch(batch_size);
    for (key, jobs) in groups {
        let config = GenerateConfig {
            return_attention: jobs.iter().any(|j| j.config.return_attention),
            ..key
        };
        let mut meta = Vec::with_capacity(jobs.len());
        let mut images = Vec::with_capacity(jobs.len());
        for job in jobs {
            images.push(job.image);
            meta.push((job.reply, job.enqueued, job.config.return_attention));
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            captioner.caption_images(images, &config)
        }));
        let caption = started.elapsed();
        match result {
            Ok(Ok(captioned)) if captioned.len() == meta.len() => {
                for ((reply, enqueued, attention), mut c) in meta.into_iter().zip(captioned) {
                    if !attention {
                        c.attention = None;
                    }
                    let _ = reply.send(Ok(JobOutput {
                        captioned: c,
                        queued: started.saturating_duration_since(enqueued),
                        caption,
                        batch_size,
                    }));
                }
            }
            other => {
                let err = match other {
                    Ok(Ok(c)) => ApiError::internal(format!(
                        "the model returned {} captions for {} images",
                        c.len(),
                        meta.len()
                    )),
                    Ok(Err(e)) => e,
                    Err(_) => ApiError::internal("the model panicked on this batch"),
                };
                for (reply, _, _) in meta {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
