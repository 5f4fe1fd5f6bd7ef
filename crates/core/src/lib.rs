//! gigafab core: domain types and the scheduler.
//!
//! Everything here is pure and deterministic: no I/O, no clock. Time is
//! seconds as `f64`, supplied by the caller (`now`).

pub mod builtin;
pub mod carbon;
pub mod catalog;
pub mod cluster;
pub mod energy;
pub mod factory;
pub mod health;
mod ids;
pub mod policy;
pub mod profile;
mod queue;
pub mod rng;
pub mod sched;
pub mod serving;
pub mod share;
pub mod spec;
pub mod time;

pub use catalog::{AcceleratorType, Catalog, TypeIdx, Vendor};
pub use factory::{Factory, FactoryError, PoolIdx};
pub use policy::{CarbonForecast, Policy, PolicyKind, SiteBalance};
pub use profile::SchedulerProfile;
pub use rng::Rng;
pub use sched::{
    AllocIdx, Decisions, FailOutcome, Job, JobIdx, JobState, Reason, Reserve, SchedCore,
};
pub use spec::{AllocationSpec, Category, JobSpec, Throughputs, TypeFilter};
