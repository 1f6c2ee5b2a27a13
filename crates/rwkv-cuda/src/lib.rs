//! cuda backend (work in progress).
