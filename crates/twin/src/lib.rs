//! gigafab digital twin: a discrete-event simulation of an AI factory that
//! drives the scheduler of `gigafab-core` with virtual time.

pub mod capacity;
pub mod endpoints;
pub mod engine;
pub mod files;
pub mod jobs_out;
pub mod plot;
pub mod report;
pub mod residency;
pub mod sharing;
pub mod slices;
pub mod workload;

pub use engine::{
    FailureClass, Failures, LLAMA3_FAILURES, Precursors, SimConfig, SimError, SimOutput, simulate,
};
pub use report::Report;
