//! [`Rag`]: the async facade over the pipeline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rag_acl::{Directory, Registration};
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    AccessResolver, AuditSink, DocId, DocKey, Document, DocumentInfo, Embedder, EmbedderTokens,
    Error, Generator, Grants, Principal, Result, Stage, TokenControl, VectorIndex,
};
use rag_index::{DurableIndex, HnswIndex, IndexConfig, RecoveryReport, StoreOptions};
use rag_pipeline::{
    IngestReport, MarkdownChunker, Pipeline, PipelineConfig, QueryAnswer, QueryEvent, QueryOptions,
    RecursiveChunker,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::stream::{AnswerStream, StreamEvent};

/// Builds a [`Rag`]: models, access, then where the index lives.
#[must_use]
pub struct RagBuilder {
    embedder: Option<Arc<dyn Embedder>>,
    generator: Option<Arc<dyn Generator>>,
    directory: Arc<Directory>,
    access: Option<Arc<dyn AccessResolver>>,
    audit: Option<Arc<dyn AuditSink>>,
    cache: bool,
    config: PipelineConfig,
    chunk_tokens: (usize, usize),
    workers: usize,
    max_in_flight: usize,
    queue_wait: Duration,
    index_config: IndexConfig,
    store_options: StoreOptions,
}

impl std::fmt::Debug for RagBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RagBuilder")
            .field("workers", &self.workers)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// The async, streaming facade: a [`Pipeline`] whose CPU stages run on a bounded
/// pool of its own, so a tokio host never blocks its runtime. Cheap to clone.
#[derive(Clone)]
pub struct Rag {
    pipeline: Arc<Pipeline>,
    directory: Arc<Directory>,
    pool: Arc<rayon::ThreadPool>,
    slots: Arc<Semaphore>,
    queue_wait: Duration,
    recovery: Option<RecoveryReport>,
}

impl std::fmt::Debug for Rag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rag")
            .field("pipeline", &self.pipeline)
            .field("workers", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

impl Default for RagBuilder {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            embedder: None,
            generator: None,
            directory: Arc::new(Directory::new(Registration::Required)),
            access: None,
            audit: None,
            cache: true,
            config: PipelineConfig::default(),
            chunk_tokens: (200, 16),
            workers,
            max_in_flight: workers * 4,
            queue_wait: Duration::from_secs(10),
            index_config: IndexConfig::default(),
            store_options: StoreOptions::default(),
        }
    }
}

impl RagBuilder {
    /// The embedding model; the index is created or opened for its fingerprint.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// The generator (local, remote, or a balancer); without one answers quote.
    pub fn generator(mut self, generator: Arc<dyn Generator>) -> Self {
        self.generator = Some(generator);
        self
    }

    /// MiniLM and the local generator (`$RAG_SDK_GENERATOR`, else
    /// [`LocalGenerator`](rag_infer::LocalGenerator)'s default) on ONNX Runtime from
    /// the pinned assets (`python3 tools/assets.py fetch`), with MiniLM's calibrated
    /// abstention floor.
    #[cfg(feature = "onnx")]
    pub fn local_models(mut self) -> Result<Self> {
        use rag_infer::{EmbedderConfig, LocalGenerator, OnnxEmbedder, OnnxGenerator, assets};
        rag_infer::load_runtime(&assets::runtime_library())?;
        self.embedder = Some(Arc::new(
            OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?,
        ));
        let local = LocalGenerator::from_env()?;
        self.generator = Some(Arc::new(OnnxGenerator::new(local.config())?));
        self.config.context_tokens = local.passage_budget();
        self.config.abstention.dense = Some(EmbedderConfig::MINILM_DENSE_FLOOR);
        Ok(self)
    }

    /// The directory principals resolve against (by default an empty one that
    /// requires registration: [`Rag::directory`] to add users).
    pub fn directory(mut self, directory: Arc<Directory>) -> Self {
        self.directory = directory;
        self
    }

    /// Resolve principals with another resolver than the directory.
    pub fn access(mut self, access: Arc<dyn AccessResolver>) -> Self {
        self.access = Some(access);
        self
    }

    /// Record every answer in an audit sink.
    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The pipeline's settings.
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Chunk size and overlap, in the embedder's tokens (200 and 16 by default).
    pub fn chunking(mut self, max_tokens: usize, overlap_tokens: usize) -> Self {
        self.chunk_tokens = (max_tokens, overlap_tokens);
        self
    }

    /// Answer without the semantic cache.
    pub fn without_cache(mut self) -> Self {
        self.cache = false;
        self
    }

    /// Threads of the pool the CPU stages run on (the machine's cores by default).
    /// With a remote generator a worker waits on the network for a whole answer:
    /// give it as many workers as answers should be generated at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Calls admitted at once (4 per worker by default); more wait up to
    /// `queue_wait` (10 s), then fail as unavailable.
    pub fn max_in_flight(mut self, calls: usize, queue_wait: Duration) -> Self {
        self.max_in_flight = calls.max(1);
        self.queue_wait = queue_wait;
        self
    }

    /// The index's settings.
    pub fn index_config(mut self, config: IndexConfig) -> Self {
        self.index_config = config;
        self
    }

    /// The durable store's settings (for [`RagBuilder::open`]).
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    /// A facade over an index in memory, made for the embedder's model.
    pub fn in_memory(self) -> Result<Rag> {
        let embedder = self.require_embedder()?;
        let index = HnswIndex::new(embedder.fingerprint().clone(), self.index_config.clone())?;
        self.finish(embedder, Arc::new(index), None)
    }

    /// A facade over the durable store in `dir`, created for the embedder's model
    /// or recovered (what recovery found: [`Rag::recovery`]).
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Rag> {
        let embedder = self.require_embedder()?;
        let (store, report) = DurableIndex::open(
            dir,
            embedder.fingerprint().clone(),
            self.index_config.clone(),
            self.store_options.clone(),
        )?;
        self.finish(embedder, Arc::new(store), Some(report))
    }

    fn require_embedder(&self) -> Result<Arc<dyn Embedder>> {
        self.embedder.clone().ok_or_else(|| {
            Error::InvalidInput(rag_core::InvalidInput::Config {
                reason: "the facade needs an embedder (or local_models())".into(),
            })
        })
    }

    fn finish(
        self,
        embedder: Arc<dyn Embedder>,
        index: Arc<dyn VectorIndex>,
        recovery: Option<RecoveryReport>,
    ) -> Result<Rag> {
        let (max, overlap) = self.chunk_tokens;
        let chunker = MarkdownChunker::new(RecursiveChunker::new(
            max,
            overlap,
            Arc::new(EmbedderTokens(embedder.clone())),
        )?);
        let access = self
            .access
            .unwrap_or_else(|| self.directory.clone() as Arc<dyn AccessResolver>);
        let mut b = Pipeline::builder()
            .chunker(Arc::new(chunker))
            .embedder(embedder)
            .index(index)
            .access(access)
            .config(self.config);
        if let Some(g) = self.generator {
            b = b.generator(g);
        }
        if self.cache {
            b = b.cache(Arc::new(SemanticCache::new(CacheConfig::default())?));
        }
        if let Some(a) = self.audit {
            b = b.audit(a);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.workers)
            .thread_name(|i| format!("rag-worker-{i}"))
            .build()
            .map_err(|e| Error::backend(Stage::Generate, e))?;
        Ok(Rag {
            pipeline: Arc::new(b.build()?),
            directory: self.directory,
            pool: Arc::new(pool),
            slots: Arc::new(Semaphore::new(self.max_in_flight)),
            queue_wait: self.queue_wait,
            recovery,
        })
    }
}

impl Rag {
    /// A builder.
    pub fn builder() -> RagBuilder {
        RagBuilder::default()
    }

    /// The synchronous pipeline underneath, for non-async callers.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The directory of users and groups (unused when another resolver was set).
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Registers `principal` (its user, groups and roles) in the directory and
    /// returns it: the default directory resolves only registered users.
    pub fn register(&self, principal: Principal) -> Principal {
        self.directory
            .add_user(&principal.tenant, &principal.user, principal.groups.clone());
        for role in &principal.roles {
            self.directory
                .assign_role(&principal.tenant, &principal.user, role);
        }
        principal
    }

    /// What opening the durable store recovered, for [`RagBuilder::open`].
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.recovery.as_ref()
    }

    async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let wait = tokio::time::timeout(self.queue_wait, Arc::clone(&self.slots).acquire_owned());
        match wait.await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::Transient {
                stage: Stage::Generate,
                source: "the pipeline is at capacity".into(),
            }),
        }
    }

    /// Runs `job` on the pool, carrying the caller's tracing span.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Pipeline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self.admit().await?;
        let (tx, rx) = oneshot::channel();
        let pipeline = Arc::clone(&self.pipeline);
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            let _entered = span.enter();
            let result = job(&pipeline);
            // Release the pipeline (and the store's lock with it, on the caller's
            // last reference) before the caller hears back.
            drop(pipeline);
            drop(permit);
            let _ = tx.send(result);
        });
        rx.await
            .unwrap_or_else(|_| Err(Error::backend(Stage::Generate, "a pipeline worker stopped")))
    }

    /// Chunks, embeds and stores documents (see [`Pipeline::ingest`]).
    pub async fn ingest(&self, docs: Vec<Document>) -> Result<IngestReport> {
        self.run(move |p| p.ingest(docs)).await
    }

    /// [`Rag::ingest`] for a caller whose service roles allow it in every
    /// document's tenant ([`Pipeline::ingest_as`]).
    pub async fn ingest_as(&self, grants: &Grants, docs: Vec<Document>) -> Result<IngestReport> {
        let grants = grants.clone();
        self.run(move |p| p.ingest_as(&grants, docs)).await
    }

    /// Deletes a document of the grants' tenant, if they allow it.
    pub async fn delete_as(&self, grants: &Grants, doc_id: DocId) -> Result<()> {
        let grants = grants.clone();
        self.run(move |p| p.delete_as(&grants, &doc_id)).await
    }

    /// Deletes a document (see [`Pipeline::delete`]).
    pub async fn delete(&self, key: DocKey) -> Result<()> {
        self.run(move |p| p.delete(&key)).await
    }

    /// A document's metadata as `principal` may see it.
    pub async fn document(
        &self,
        principal: &Principal,
        doc_id: DocId,
    ) -> Result<Option<DocumentInfo>> {
        let principal = principal.clone();
        self.run(move |p| p.document(&principal, &doc_id)).await
    }

    /// The whole answer to `question`, with default options.
    pub async fn query(&self, principal: &Principal, question: &str) -> Result<QueryAnswer> {
        self.query_with(principal, question, QueryOptions::default())
            .await
    }

    /// The whole answer to `question`.
    pub async fn query_with(
        &self,
        principal: &Principal,
        question: &str,
        options: QueryOptions,
    ) -> Result<QueryAnswer> {
        let principal = principal.clone();
        let question = question.to_owned();
        self.run(move |p| p.query(&principal, &question, &options))
            .await
    }

    /// The answer to `question` as a stream, with default options.
    pub async fn stream(&self, principal: &Principal, question: &str) -> Result<AnswerStream> {
        self.stream_with(principal, question, QueryOptions::default())
            .await
    }

    /// The answer to `question` as a stream: sources, tokens, then the answer.
    /// Waits only for admission; failures arrive as the stream's last event.
    pub async fn stream_with(
        &self,
        principal: &Principal,
        question: &str,
        options: QueryOptions,
    ) -> Result<AnswerStream> {
        let permit = self.admit().await?;
        // One slot: the generator is at most one token ahead of the reader, and
        // stops at its next token once the reader is gone.
        let (tx, rx) = mpsc::channel::<Result<StreamEvent>>(1);
        let pipeline = Arc::clone(&self.pipeline);
        let principal = principal.clone();
        let question = question.to_owned();
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            let _entered = span.enter();
            let result = pipeline.query_stream(&principal, &question, &options, &mut |event| {
                let event = match event {
                    QueryEvent::Retrieved { sources } => StreamEvent::Sources(sources.to_vec()),
                    QueryEvent::Token(t) => StreamEvent::Token(t.to_owned()),
                };
                match tx.blocking_send(Ok(event)) {
                    Ok(()) => TokenControl::Continue,
                    Err(_) => TokenControl::Stop,
                }
            });
            drop(pipeline);
            drop(permit);
            let last = result.map(|a| StreamEvent::Done(Box::new(a)));
            let _ = tx.blocking_send(last);
        });
        Ok(AnswerStream { events: rx })
    }
}
