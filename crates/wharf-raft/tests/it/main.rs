//! Replicated shard logs on three nodes on 127.0.0.1, each with its own storage, raft group and
//! cluster listener, in this process (a stopped node is shut down; kill -9 of real processes
//! belongs to the server's tests).

#![allow(clippy::unwrap_used)]

mod cluster;
mod conformance;
mod failover;
mod grouped;
mod hostile;
mod local_ack;
mod power_cut;
mod snapshot;
