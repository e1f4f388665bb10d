//! drift-server (work in progress).
