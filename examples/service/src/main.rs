//! `rag-service --config service.toml`: the example host service (see
//! `docs/SERVICE.md`). It listens at once (`/livez` 200, `/readyz` 503 with the
//! reason), loads the models, recovers the store and the ingest queue, starts the
//! watchers, then reports ready. SIGTERM or Ctrl-C: `/readyz` turns 503, requests
//! in flight finish, the queue drains (what does not stays journaled), and the
//! process exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use rag_service::config::GeneratorChoice;
use rag_service::{Config, Models, Service, router, watcher};

/// The example RAG host service.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file.
    #[arg(long, env = "RAG_SERVICE_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rag-service: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let metrics = rag_service::metrics::install()?;
    rag_service::metrics::spawn_upkeep(metrics.clone(), Duration::from_secs(5));
    let service = Service::new(config, metrics)?;
    let listener = tokio::net::TcpListener::bind(service.config().listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");

    let watchers = Arc::new(Mutex::new(None));
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::new(Mutex::new(None));
    let failure = Arc::new(tokio::sync::Notify::new());
    let (s, w, f, n) = (
        Arc::clone(&service),
        Arc::clone(&watchers),
        Arc::clone(&failed),
        Arc::clone(&failure),
    );
    tokio::task::spawn_blocking(move || {
        let started = (|| -> anyhow::Result<()> {
            let generate = s.config().models.generator == GeneratorChoice::Local;
            s.start(|| Models::local(generate))?;
            if let Some(queue) = s.queue()
                && !s.config().watch.is_empty()
            {
                let watcher = watcher::spawn(&s.config().watch, Arc::clone(queue))?;
                if let Ok(mut slot) = w.lock() {
                    *slot = Some(watcher);
                }
            }
            Ok(())
        })();
        match started {
            Ok(()) => tracing::info!("ready"),
            Err(e) => {
                if let Ok(mut slot) = f.lock() {
                    *slot = Some(e);
                }
                n.notify_one();
            }
        }
    });
    let stop = Arc::clone(&service);
    axum::serve(listener, router(Arc::clone(&service)))
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown_signal() => tracing::info!("shutting down: draining requests"),
                () = failure.notified() => {}
            }
            stop.begin_shutdown();
        })
        .await?;
    if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e.context("start-up failed"));
    }
    let grace = Duration::from_secs(service.config().limits.shutdown_grace_s);
    drain(&service, grace).await;
    drop(watchers);
    Ok(())
}

async fn drain(service: &Arc<Service>, grace: Duration) {
    if let Some(q) = service.queue() {
        let q = Arc::clone(q);
        let left = tokio::task::spawn_blocking(move || q.drain(grace))
            .await
            .unwrap_or(0);
        tracing::info!(left, "ingest queue drained (what is left stays journaled)");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
