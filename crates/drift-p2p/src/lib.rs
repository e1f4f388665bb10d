//! drift-p2p (work in progress).
