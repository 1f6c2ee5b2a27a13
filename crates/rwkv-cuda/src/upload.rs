//! Weights on the device: upload (matrices repacked by `repack`, vectors as f32) and typed
//! lookups by weight id for the lowering.

use rwkv_core::backend::{WeightId, WeightMeta};
use rwkv_core::model::Tensor;
use rwkv_core::{BackendErrorKind, Error, Result};

use crate::gpu::DevBuf;
use crate::repack::{self, GpuDType};
use crate::{invalid, CudaBackend};

pub(crate) enum GpuWeight {
    Matrix {
        dtype: GpuDType,
        rows: usize,
        cols: usize,
        q: DevBuf,
        m: DevBuf,
    },
    Vector {
        len: usize,
        buf: DevBuf,
    },
}

/// An uploaded matrix as the kernels see it: encoding, `[rows, cols]`, payload and metadata
/// addresses.
#[derive(Clone, Copy)]
pub(crate) struct MatrixRef {
    pub dtype: GpuDType,
    pub rows: usize,
    pub cols: usize,
    pub q: u64,
    pub m: u64,
}

/// The uploaded weights, indexed by weight id.
#[derive(Default)]
pub(crate) struct Weights(pub Vec<Option<GpuWeight>>);

impl Weights {
    /// Matrix `id`; `what` names the op asking, for the error.
    pub fn matrix(&self, id: WeightId, what: &str) -> Result<MatrixRef> {
        match self.0.get(id).and_then(|w| w.as_ref()) {
            Some(GpuWeight::Matrix {
                dtype,
                rows,
                cols,
                q,
                m,
            }) => Ok(MatrixRef {
                dtype: *dtype,
                rows: *rows,
                cols: *cols,
                q: q.ptr,
                m: m.ptr,
            }),
            Some(_) => Err(invalid(format!(
                "{what}: weight {id} is a vector, a matrix is needed"
            ))),
            None => Err(invalid(format!("{what}: weight {id} was not uploaded"))),
        }
    }

    /// Device address of vector `id`, which must hold `len` values.
    pub fn vector(&self, id: WeightId, len: usize) -> Result<u64> {
        match self.0.get(id).and_then(|w| w.as_ref()) {
            Some(GpuWeight::Vector { len: l, buf }) if *l == len => Ok(buf.ptr),
            Some(GpuWeight::Vector { len: l, .. }) => Err(invalid(format!(
                "weight {id} has {l} values, the op needs {len}"
            ))),
            Some(_) => Err(invalid(format!(
                "weight {id} is a matrix, the op needs a vector"
            ))),
            None => Err(invalid(format!("weight {id} was not uploaded"))),
        }
    }
}

impl CudaBackend {
    /// `Backend::upload_weight`: weights arrive in id order, 1-D as f32 vectors, 2-D repacked.
    pub(crate) fn upload(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()> {
        self.gpu.bind()?;
        if id != self.weights.0.len() {
            return Err(invalid(format!(
                "upload_weight: expected id {}, got {id} ('{name}')",
                self.weights.0.len()
            )));
        }
        // Streamed tensors (TensorBytes::Source) are fetched here; in-memory ones are borrowed.
        let data = tensor.data.read()?;
        let data: &[u8] = &data;
        let w = match tensor.shape.len() {
            1 => {
                let n = tensor.shape[0];
                if tensor.dtype.tensor_bytes(&tensor.shape) != Some(data.len()) {
                    return Err(invalid(format!(
                        "'{name}': byte length does not match its shape"
                    )));
                }
                let v = repack::to_f32(tensor.dtype, data, n)?;
                GpuWeight::Vector {
                    len: n,
                    buf: DevBuf::from_bytes(&repack::f32_bytes(&v))?,
                }
            }
            2 => {
                let (rows, cols) = (tensor.shape[0], tensor.shape[1]);
                let r =
                    repack::repack_matrix(tensor.dtype, data, rows, cols).map_err(|e| {
                        match e.backend_error_kind() {
                            Some(kind) => {
                                Error::backend_kind("cuda", kind, format!("'{name}': {e}"))
                            }
                            None => invalid(format!("'{name}': {e}")),
                        }
                    })?;
                let need = r.q.len() + r.m.len();
                let free = self.gpu.free_mem();
                if need > free {
                    return Err(Error::backend_kind(
                        "cuda",
                        BackendErrorKind::OutOfMemory,
                        format!(
                            "'{name}' needs {} MiB, the device has {} MiB free",
                            need >> 20,
                            free >> 20
                        ),
                    ));
                }
                GpuWeight::Matrix {
                    dtype: r.dtype,
                    rows,
                    cols,
                    q: DevBuf::from_bytes(&r.q)?,
                    m: DevBuf::from_bytes(&r.m)?,
                }
            }
            n => {
                return Err(Error::backend_kind(
                    "cuda",
                    BackendErrorKind::Unsupported,
                    format!("'{name}': {n}-dimensional tensors are not supported"),
                ))
            }
        };
        self.weights.0.push(Some(w));
        self.metas.push(WeightMeta::of(name, tensor));
        Ok(())
    }
}
