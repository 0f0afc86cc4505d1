//! The service's state: what start-up builds (in order: models, store, queue),
//! what readiness reports, and the shared verifiers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use rag::acl::jwt::{JwtConfig, JwtVerifier, KeySet};
use rag::acl::{AuditLog, Directory, Registration, WebhookVerifier};
use rag::pipeline::queue::{IngestQueue, QueueConfig};
use rag::pipeline::{HealthStatus, PipelineConfig};
use rag::{Embedder, Generator, Rag, TenantId};

use crate::config::{Config, ConfigError};

/// The models the service answers with.
#[derive(Clone)]
pub struct Models {
    /// The embedding model.
    pub embedder: Arc<dyn Embedder>,
    /// The generator; `None` answers extractively.
    pub generator: Option<Arc<dyn Generator>>,
    /// The embedder's calibrated dense abstention floor, if known.
    pub dense_floor: Option<f32>,
    /// The passage budget of the prompt (`PipelineConfig::context_tokens`).
    pub context_tokens: Option<usize>,
}

impl Models {
    /// MiniLM on ONNX Runtime from the pinned assets (`python3 tools/assets.py
    /// fetch`), with the local generator (`$RAG_SDK_GENERATOR`, else SmolLM2) when
    /// `generate`.
    pub fn local(generate: bool) -> rag::Result<Self> {
        use rag::infer::{EmbedderConfig, LocalGenerator, OnnxEmbedder, OnnxGenerator, assets};
        rag::infer::load_runtime(&assets::runtime_library())?;
        let embedder: Arc<dyn Embedder> =
            Arc::new(OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?);
        let generator: Option<Arc<dyn Generator>> = if generate {
            Some(Arc::new(OnnxGenerator::new(
                LocalGenerator::from_env()?.config(),
            )?))
        } else {
            None
        };
        Ok(Self {
            embedder,
            generator,
            dense_floor: Some(EmbedderConfig::MINILM_DENSE_FLOOR),
            context_tokens: if generate {
                LocalGenerator::from_env()?.passage_budget()
            } else {
                None
            },
        })
    }
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("embedder", &self.embedder.fingerprint())
            .field("generator", &self.generator.is_some())
            .finish()
    }
}

/// What is built once start-up is done.
pub(crate) struct Core {
    pub(crate) rag: Rag,
    pub(crate) queue: Arc<IngestQueue>,
    pub(crate) generator: bool,
}

/// The start-up stage, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    LoadingModels,
    RecoveringStore,
    OpeningQueue,
    Running,
    Failed(String),
}

/// The service: configuration, verifiers, metrics, and the core once started.
pub struct Service {
    pub(crate) config: Config,
    pub(crate) verifier: JwtVerifier,
    pub(crate) webhooks: HashMap<TenantId, WebhookVerifier>,
    pub(crate) metrics: PrometheusHandle,
    core: OnceLock<Core>,
    stage: Mutex<Stage>,
    health: Mutex<Option<(Instant, Vec<String>)>>,
    pub(crate) stopping: AtomicBool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("listen", &self.config.listen)
            .field(
                "stage",
                &*self.stage.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The JWT keys or settings are unusable.
    #[error("auth: {0}")]
    Auth(#[from] rag::acl::jwt::JwtError),
    /// A webhook secret is unusable.
    #[error("webhooks: {0}")]
    Webhook(#[from] rag::acl::WebhookError),
    /// The SDK refused (models, store, audit log).
    #[error("{0}")]
    Sdk(#[from] rag::Error),
    /// The audit log could not open.
    #[error("audit log: {0}")]
    Audit(#[from] rag::acl::AclError),
    /// The ingest queue could not open.
    #[error("ingest queue: {0}")]
    Queue(#[from] rag::pipeline::queue::QueueError),
    /// A file-system watch could not start.
    #[error("watcher: {0}")]
    Watch(String),
}

impl Service {
    /// Checks the configuration and builds the verifiers; quick, so a bad key file
    /// stops the process before it listens.
    pub fn new(config: Config, metrics: PrometheusHandle) -> Result<Arc<Self>, StartError> {
        let mut jwt = JwtConfig::new(config.auth.issuer.clone(), config.auth.audience.clone());
        jwt.leeway = Duration::from_secs(config.auth.leeway_s);
        let verifier = JwtVerifier::new(jwt, KeySet::from_jwks_file(&config.auth.jwks_file)?)?;
        let mut webhooks = HashMap::new();
        for w in &config.webhooks {
            let secret = Config::webhook_secret(w)?;
            let v = WebhookVerifier::new(vec![secret], Duration::from_secs(w.tolerance_s))?;
            webhooks.insert(TenantId::new(w.tenant.as_str()), v);
        }
        Ok(Arc::new(Self {
            config,
            verifier,
            webhooks,
            metrics,
            core: OnceLock::new(),
            stage: Mutex::new(Stage::LoadingModels),
            health: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Loads the models with `load`, recovers the store and opens the queue; the
    /// service answers once this returns `Ok`. Blocking: run it off the runtime.
    pub fn start(
        self: &Arc<Self>,
        load: impl FnOnce() -> rag::Result<Models>,
    ) -> Result<(), StartError> {
        let result = self.start_inner(load);
        if let Err(e) = &result {
            self.set_stage(Stage::Failed(e.to_string()));
        }
        result
    }

    fn start_inner(
        self: &Arc<Self>,
        load: impl FnOnce() -> rag::Result<Models>,
    ) -> Result<(), StartError> {
        let models = load()?;
        self.set_stage(Stage::RecoveringStore);
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::Config(ConfigError::Invalid(format!(
                "state_dir {}: {e}",
                dir.display()
            )))
        })?;
        let audit = AuditLog::open(dir.join("audit.log"))?;
        let mut pipeline = PipelineConfig::default();
        pipeline.abstention.dense = models.dense_floor;
        pipeline.context_tokens = models.context_tokens;
        let mut builder = Rag::builder()
            .embedder(models.embedder)
            .config(pipeline)
            // Principals come from verified tokens, with the groups they claim.
            .directory(Arc::new(Directory::new(Registration::TrustClaims)))
            .audit(Arc::new(audit));
        let generator = models.generator.is_some();
        if let Some(g) = models.generator {
            builder = builder.generator(g);
        }
        let rag = builder.open(dir.join("index"))?;
        if let Some(r) = rag.recovery() {
            tracing::info!(?r, "store recovered");
        }
        self.set_stage(Stage::OpeningQueue);
        let q = &self.config.queue;
        let config = QueueConfig {
            capacity: q.capacity,
            batch: q.batch,
            max_attempts: q.max_attempts,
            retry_after: Duration::from_secs(q.retry_after_s),
            ..QueueConfig::default()
        };
        let (queue, recovery) =
            IngestQueue::open(dir.join("queue"), Arc::clone(rag.pipeline()), config)?;
        tracing::info!(?recovery, "ingest queue opened");
        let _ = self.core.set(Core {
            rag,
            queue: Arc::new(queue),
            generator,
        });
        self.set_stage(Stage::Running);
        Ok(())
    }

    fn set_stage(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(PoisonError::into_inner) = stage;
    }

    /// The core, once started.
    pub(crate) fn core(&self) -> Option<&Core> {
        self.core.get()
    }

    /// The facade, once started (for hosts that add routes of their own).
    pub fn rag(&self) -> Option<&Rag> {
        self.core().map(|c| &c.rag)
    }

    /// The ingest queue, once started.
    pub fn queue(&self) -> Option<&Arc<IngestQueue>> {
        self.core().map(|c| &c.queue)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the state lives.
    pub fn state_dir(&self) -> &PathBuf {
        &self.config.state_dir
    }

    /// Marks the service as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Why the service is not ready; empty when it is. Probes the models at most
    /// once a second.
    pub(crate) fn not_ready(&self) -> Vec<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return vec!["shutting down".into()];
        }
        let stage = self
            .stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let waiting = match stage {
            Stage::LoadingModels => "loading the models",
            Stage::RecoveringStore => "recovering the store",
            Stage::OpeningQueue => "opening the ingest queue",
            Stage::Failed(e) => return vec![format!("start-up failed: {e}")],
            Stage::Running => "",
        };
        if !waiting.is_empty() {
            return vec![format!("starting: {waiting}")];
        }
        let Some(core) = self.core() else {
            return vec!["starting".into()];
        };
        let mut cached = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, reasons)) = &*cached
            && at.elapsed() < Duration::from_secs(1)
        {
            return reasons.clone();
        }
        let health = core.rag.pipeline().health();
        let mut reasons = Vec::new();
        if health.status == HealthStatus::Unhealthy {
            reasons.extend(health.reasons.iter().cloned());
        }
        if core.generator {
            // A generator that fails makes answers extractive: not ready.
            reasons.extend(
                health
                    .reasons
                    .iter()
                    .filter(|r| r.starts_with("generator"))
                    .cloned(),
            );
        }
        reasons.dedup();
        *cached = Some((Instant::now(), reasons.clone()));
        reasons
    }
}
