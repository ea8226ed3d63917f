//! The outside world of gameye-bridge. Each module is one adapter; adapters do not know each other.
