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
    /// A backend could not start or failed while running; `backend` is its name.
    #[error("{backend}: {what}")]
    Backend { backend: String, what: String },
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
    pub fn backend(backend: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            what: what.into(),
        }
    }
}
