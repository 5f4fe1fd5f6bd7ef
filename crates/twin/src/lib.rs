//! gigafab digital twin: a discrete-event simulation of an AI factory that
//! drives the scheduler of `gigafab-core` with virtual time.

pub mod plot;
pub mod workload;
