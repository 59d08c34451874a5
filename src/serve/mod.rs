//! `rlhf serve`: the model and its moderation classifier behind an OpenAI-compatible API.
//!
//! Two sides meet at a queue: [`routes`] (HTTP on tokio and axum) checks and encodes each
//! request in [`api`]'s shapes and queues it; [`worker`], on a thread of its own, owns the
//! model and decodes every request in flight in one batch that requests join and leave
//! between steps. Each request hears back through a channel of its own, which also tells the
//! model's thread when its client has gone.

pub mod api;
pub mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use anyhow::{Context, Result};
use burn::prelude::*;
use tokenizers::Tokenizer;
use tokio::sync::{Notify, mpsc};

use crate::bad_input;
use crate::data::template::ChatTemplate;
use crate::generate::{Generator, SamplingConfig};
use crate::model::CausalLm;
use crate::model::config::ModelConfig;
use crate::moderation::Moderator;

/// How long a stopping server waits for the requests in flight.
const GRACE: Duration = Duration::from_secs(30);

/// Everything a server runs with, loaded and checked.
pub struct Server {
    pub model: CausalLm,
    pub config: ModelConfig,
    /// Where the model came from (its generation_config.json adds end-of-turn tokens).
    pub model_dir: PathBuf,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub moderator: Option<Moderator>,
    pub defaults: SamplingConfig,
    pub model_id: String,
    pub moderation_id: Option<String>,
    pub api_key: Option<String>,
    pub address: (String, u16),
    pub max_batch: usize,
    pub max_queue: usize,
    pub max_tokens: usize,
    pub prompt_cache: usize,
    pub device: Device,
}

/// Serves until SIGTERM or SIGINT, then stops taking requests, finishes those in flight (for
/// at most [`GRACE`]) and returns.
pub fn run(server: Server) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(server.address.clone()));
    let (host, port) = &server.address;
    let listener = listener.map_err(|e| {
        bad_input!(
            "cannot listen on {host}:{port}: {e}\nhint: another --port, or stop what uses it"
        )
    })?;
    let address: SocketAddr = listener.local_addr()?;

    let (jobs, queue) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(routes::Shared {
        tokenizer: server.tokenizer.clone(),
        template: server.template,
        window: server.config.context_window(),
        max_tokens: server.max_tokens,
        max_batch: server.max_batch,
        max_queue: server.max_queue,
        defaults: server.defaults,
        model_id: server.model_id.clone(),
        moderation_id: server.moderation_id,
        created: routes::now(),
        api_key: server.api_key,
        jobs,
        queued: queued.clone(),
        next_id: AtomicU64::new(1),
    });
    let limits = worker::Limits { max_batch: server.max_batch, prompt_cache: server.prompt_cache };
    let (model, config, model_dir) = (server.model, server.config, server.model_dir);
    let (tokenizer, moderator, device) = (server.tokenizer, server.moderator, server.device);
    let model_thread = std::thread::Builder::new().name("model".into()).spawn(move || {
        let generator = Generator::new(&model, &tokenizer, &config, &device)
            .with_generation_config(&model_dir)
            .prepared();
        worker::Worker::new(generator, &tokenizer, moderator.as_ref(), limits, queued).run(queue)
    })?;

    eprintln!(
        "rlhf serve: {} on http://{address}/v1 (batch {}, queue {}; Ctrl-C or SIGTERM stops)",
        server.model_id, server.max_batch, server.max_queue
    );
    let stopping = Arc::new(Notify::new());
    let app = routes::router(shared);
    runtime.block_on(async {
        let signal = stopping.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop_signal().await;
            eprintln!("rlhf serve: stopping; finishing the requests in flight");
            signal.notify_one();
        });
        let deadline = async {
            stopping.notified().await;
            tokio::time::sleep(GRACE).await;
        };
        tokio::select! {
            served = server => served.context("serving HTTP"),
            () = deadline => {
                eprintln!("rlhf serve: requests still running after {} s; stopping anyway", GRACE.as_secs());
                Ok(())
            }
        }
    })?;
    // Every handler's end closed the queue: the model's thread returns after its last answer.
    runtime.shutdown_timeout(Duration::from_secs(1));
    model_thread.join().map_err(|_| anyhow::anyhow!("the model's thread panicked"))?;
    Ok(())
}

async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
