//! Holds the workspace-level examples and tests of backlite; not published.

pub mod crash;
pub mod leased;
