//! Where a match is played: the pure region chooser of DESIGN §3 step 2, with GameLift queues'
//! semantics (PROTOCOLS §5) plus a minimax objective, and the location aliases that feed it.

mod aliases;
mod candidates;
mod choice;
mod chooser;
mod policy;
#[cfg(test)]
mod tests;

pub use aliases::LocationAliases;
pub use candidates::candidate_locations;
pub use choice::{NoLocation, RankedLocation, RegionChoice};
pub use chooser::{RegionInput, choose_region};
pub use policy::{CapExceeded, InvalidPolicy, LatencyCap, MissingLatency, Objective, RegionPolicy};
