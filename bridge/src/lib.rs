//! The core of gameye-bridge: what a match, an assignment and a placement are, and the rules that
//! turn one into the other. Nothing here performs I/O; the outside world is reached through the
//! traits in [`ports`], implemented by the `adapters` crate.
