//! The status model: (desired, observed, heartbeat, time) -> per-app status. Pure.
