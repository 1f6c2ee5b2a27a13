//! Typed errors. Every error that bad input can cause names the file (or source) and what is wrong.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OS-level failure reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes of a model, vocabulary or state file are not what the format says.
    /// `what` is one line naming the problem, e.g. "tensor 'x' data runs past end of file".
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    /// The file is well formed but its tensors do not describe a model we can run
    /// (missing tensor, shape that disagrees with the architecture, unsupported version).
    #[error("{path}: {what}")]
    Model { path: PathBuf, what: String },
    /// Bad arguments from the caller (unknown dtype name, token id out of range, ...).
    #[error("{0}")]
    Invalid(String),
    /// A backend could not start or failed while running; `backend` is its name and `kind` says
    /// what a caller can do about it (fall back, retry later, fix the call).
    #[error("{backend}: {what}")]
    Backend {
        backend: String,
        kind: BackendErrorKind,
        what: String,
    },
}

/// What kind of backend failure an [`Error::Backend`] is: the router falls back to another
/// backend on `Unavailable`/`Unsupported`, a server answers 503 for `OutOfMemory`/`DeviceLost`
/// and 500 otherwise, and `InvalidArgument` is the caller's bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BackendErrorKind {
    /// The backend cannot start here: no driver, no device, compiled out of this build.
    Unavailable,
    /// The device is out of memory (weights, states or a plan's buffers do not fit).
    OutOfMemory,
    /// The device stopped answering or was reset; everything on it is gone.
    DeviceLost,
    /// An op, dtype or shape this backend does not run.
    Unsupported,
    /// A call that breaks the contract: unknown plan or slot, wrong lengths, bad token id.
    InvalidArgument,
    /// Anything else the device reported (a kernel that failed to compile, a driver error).
    Failed,
}

impl BackendErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendErrorKind::Unavailable => "unavailable",
            BackendErrorKind::OutOfMemory => "out of memory",
            BackendErrorKind::DeviceLost => "device lost",
            BackendErrorKind::Unsupported => "unsupported",
            BackendErrorKind::InvalidArgument => "invalid argument",
            BackendErrorKind::Failed => "failed",
        }
    }
}

impl Error {
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }
    pub fn model(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            what: what.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::Invalid(what.into())
    }
    /// A backend failure of kind [`BackendErrorKind::Failed`].
    pub fn backend(backend: impl Into<String>, what: impl Into<String>) -> Self {
        Error::backend_kind(backend, BackendErrorKind::Failed, what)
    }
    pub fn backend_kind(
        backend: impl Into<String>,
        kind: BackendErrorKind,
        what: impl Into<String>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            kind,
            what: what.into(),
        }
    }

    /// The backend failure kind, if this is a backend error. Contract violations that rwkv-core
    /// itself finds ([`crate::backend::Plan::validate`], [`crate::backend::Plan::check_step`])
    /// come back as `InvalidArgument` from the backend that called them.
    pub fn backend_error_kind(&self) -> Option<BackendErrorKind> {
        match self {
            Error::Backend { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
