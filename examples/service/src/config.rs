//! The service's configuration: a TOML file, a few environment overrides, and
//! validation at start-up with errors that say which key is wrong.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! state_dir = "./service-state"
//!
//! [auth]
//! issuer = "https://idp.example"
//! audience = "rag"
//! jwks_file = "keys.json"          # keys, each with the tenants it may issue for
//!
//! [[webhooks]]
//! tenant = "acme"
//! secret_env = "ACME_WEBHOOK_SECRET"
//!
//! [[watch]]
//! dir = "./docs"
//! tenant = "acme"
//! groups = ["staff"]
//! ```
//!
//! Relative paths are resolved against the file's directory. `RAG_SERVICE_LISTEN`
//! and `RAG_SERVICE_STATE_DIR` override `listen` and `state_dir`; webhook secrets
//! are read from the environment or a file of their own (`secret_env`,
//! `secret_file`), never from this one. An unknown key is an
//! error (a typo would otherwise silently keep a default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (unknown keys included).
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The index, queue journal and audit log live here.
    pub state_dir: PathBuf,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Bearer-token verification.
    pub auth: AuthConfig,
    /// The models.
    #[serde(default)]
    pub models: ModelsConfig,
    /// The ingest queue.
    #[serde(default)]
    pub queue: QueueSettings,
    /// Signed webhooks, one entry per tenant that may send them.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Directories whose files are indexed and kept in sync.
    #[serde(default)]
    pub watch: Vec<WatchConfig>,
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// The longest question, in bytes (longer: 400).
    pub max_question_bytes: usize,
    /// Requests served at once; more get 503 at once (load shedding).
    pub max_concurrent_requests: usize,
    /// A request's time limit, in seconds (streams excepted).
    pub request_timeout_s: u64,
    /// Seconds between SSE keep-alive comments.
    pub keep_alive_s: u64,
    /// How long shutdown waits for requests and the queue to drain, in seconds.
    pub shutdown_grace_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_question_bytes: 4096,
            max_concurrent_requests: 256,
            request_timeout_s: 120,
            keep_alive_s: 15,
            shutdown_grace_s: 30,
        }
    }
}

/// Bearer-token verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The one accepted `iss`.
    pub issuer: String,
    /// The `aud` this service answers to.
    pub audience: String,
    /// A JWKS file; each key names the tenants it may issue for (`x-rag-tenants`).
    pub jwks_file: PathBuf,
    /// Clock skew allowed, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

/// Which generator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorChoice {
    /// The local generator on ONNX Runtime, in process (`$RAG_SDK_GENERATOR`:
    /// `smollm2` or `qwen`, else the SDK's default).
    #[default]
    Local,
    /// None: answers quote the passages (extractive).
    None,
}

/// The models.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// The generator.
    pub generator: GeneratorChoice,
}

/// The ingest queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Pending changes at most (more: 429 with `Retry-After`).
    pub capacity: usize,
    /// Upserts applied together at most.
    pub batch: usize,
    /// Attempts before a change becomes a dead letter.
    pub max_attempts: u32,
    /// The `Retry-After` hint of a full queue, in seconds.
    pub retry_after_s: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            batch: 64,
            max_attempts: 5,
            retry_after_s: 1,
        }
    }
}

/// One tenant's webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The tenant whose documents it changes.
    pub tenant: String,
    /// The environment variable holding the HMAC secret (at least 32 bytes).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Or a file holding it (a mounted secret; trailing whitespace is dropped).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How far a signature's timestamp may be from now, in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_s: u64,
}

/// One watched directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The directory (watched recursively).
    pub dir: PathBuf,
    /// The tenant its files belong to.
    pub tenant: String,
    /// Groups that may read its files.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Users that may read its files.
    #[serde(default)]
    pub users: Vec<String>,
    /// File extensions indexed (others are ignored).
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Milliseconds the debouncer waits for an editor's burst of events to end.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_leeway() -> u64 {
    30
}
fn default_tolerance() -> u64 {
    300
}
fn default_debounce() -> u64 {
    200
}
fn default_extensions() -> Vec<String> {
    ["md", "txt"].map(String::from).to_vec()
}

impl Config {
    /// Reads, overrides from the environment, resolves paths and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if let Ok(listen) = std::env::var("RAG_SERVICE_LISTEN") {
            config.listen = listen.parse().map_err(|_| {
                ConfigError::Invalid(format!("RAG_SERVICE_LISTEN={listen:?} is not host:port"))
            })?;
        }
        if let Some(dir) = std::env::var_os("RAG_SERVICE_STATE_DIR") {
            config.state_dir = dir.into();
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no environment, no validation).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.state_dir);
        join(&mut self.auth.jwks_file);
        for w in &mut self.watch {
            join(&mut w.dir);
        }
        for w in &mut self.webhooks {
            if let Some(f) = &mut w.secret_file {
                join(f);
            }
        }
    }

    /// Checks values that TOML's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            return bad(format!(
                "limits.max_body_bytes = {} is under 1024",
                l.max_body_bytes
            ));
        }
        if l.max_question_bytes == 0 || l.max_question_bytes > l.max_body_bytes {
            return bad("limits.max_question_bytes must be in 1..=max_body_bytes".into());
        }
        if l.max_concurrent_requests == 0 || l.keep_alive_s == 0 || l.request_timeout_s == 0 {
            return bad(
                "limits.max_concurrent_requests, keep_alive_s and request_timeout_s must be positive"
                    .into(),
            );
        }
        if self.auth.leeway_s > 300 {
            return bad(format!(
                "auth.leeway_s = {} is over 300",
                self.auth.leeway_s
            ));
        }
        if self.queue.capacity == 0 || self.queue.batch == 0 || self.queue.max_attempts == 0 {
            return bad("queue.capacity, batch and max_attempts must be positive".into());
        }
        let mut tenants = std::collections::HashSet::new();
        for w in &self.webhooks {
            if w.tenant.is_empty() || !tenants.insert(&w.tenant) {
                return bad(format!(
                    "webhooks: tenant {:?} is empty or repeated",
                    w.tenant
                ));
            }
        }
        for w in &self.watch {
            if w.tenant.is_empty() {
                return bad(format!("watch {}: tenant is empty", w.dir.display()));
            }
            if w.groups.is_empty() && w.users.is_empty() {
                return bad(format!(
                    "watch {}: name the groups or users who may read its files",
                    w.dir.display()
                ));
            }
            if !w.dir.is_dir() {
                return bad(format!("watch {}: not a directory", w.dir.display()));
            }
        }
        Ok(())
    }

    /// The webhook secret of `w`, from its environment variable or file.
    pub fn webhook_secret(w: &WebhookConfig) -> Result<Vec<u8>, ConfigError> {
        let (secret, from) = match (&w.secret_env, &w.secret_file) {
            (Some(var), _) => (std::env::var(var).ok(), var.clone()),
            (None, Some(file)) => (
                std::fs::read_to_string(file)
                    .ok()
                    .map(|s| s.trim_end().to_owned()),
                file.display().to_string(),
            ),
            (None, None) => (None, "nothing".to_owned()),
        };
        match secret {
            Some(s) if s.len() >= 32 => Ok(s.into_bytes()),
            Some(_) => Err(ConfigError::Invalid(format!(
                "webhook secret of tenant {} (from {from}) is under 32 bytes",
                w.tenant
            ))),
            None => Err(ConfigError::Invalid(format!(
                "webhook secret of tenant {} is not set (read from {from})",
                w.tenant
            ))),
        }
    }
}

impl Limits {
    /// Seconds between keep-alive comments.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
state_dir = "state"
[auth]
issuer = "https://idp.example"
audience = "rag"
jwks_file = "keys.json"
"#;

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.queue.capacity, 10_000);
        assert_eq!(c.models.generator, GeneratorChoice::Local);
        c.validate().unwrap();
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = Config::parse(&format!("{MINIMAL}\n[queue]\ncapacty = 3\n")).unwrap_err();
        assert!(err.to_string().contains("capacty"), "{err}");
        let err = Config::parse(&format!("lisen = \"0.0.0.0:1\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut c = Config::parse(MINIMAL).unwrap();
        c.auth.leeway_s = 3600;
        assert!(c.validate().is_err());
        let mut c = Config::parse(MINIMAL).unwrap();
        c.queue.capacity = 0;
        assert!(c.validate().is_err());
        let c = Config::parse(&format!(
            "{MINIMAL}\n[[watch]]\ndir = \"/nonexistent-dir\"\ntenant = \"acme\"\ngroups = [\"staff\"]\n"
        ))
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }
}
