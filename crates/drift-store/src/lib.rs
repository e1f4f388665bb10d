//! drift-store (work in progress).
