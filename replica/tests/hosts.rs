//! The replica crate's integration tests, one binary (each test binary links the whole
//! raft stack again: two of them cost CI a minute of builds): groups over the in-memory
//! router with faults ([`router`]), and durable hosts on their disks ([`durable_host`]).

mod durable_host;
mod router;
