//! The client: builder, adding tasks, start and stop.

use std::sync::Arc;

/// A handle on a backlite database and its worker pool. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    #[allow(dead_code)]
    inner: Arc<()>,
}
