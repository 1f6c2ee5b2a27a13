//! rwkv: one API over every backend.
