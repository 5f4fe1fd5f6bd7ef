//! Indices the scheduler core and its queue share.

/// Index of a job in `SchedCore::jobs`.
pub type JobIdx = u32;
/// Index of an allocation.
pub type AllocIdx = u32;
