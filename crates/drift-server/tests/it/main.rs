//! Multi-node tests: real nodes in one process, on loopback, every wait bounded.

mod cluster;
mod faults;
mod limits;
mod scenarios;
