//! Where a client reads "now" for task timing: the wall clock, or a test's controlled clock
//! (the `testing` feature). Every time the client stores or compares (created and due times,
//! backoffs, retention expiry, claims, releases) comes from here, so that a test that moves
//! its clock moves all of them together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::{Millis, now_millis};

#[derive(Clone, Default)]
pub(crate) struct Clock {
    #[cfg(feature = "testing")]
    controlled: Option<crate::testing::TestClock>,
}

impl Clock {
    #[cfg(feature = "testing")]
    pub(crate) fn controlled(clock: crate::testing::TestClock) -> Clock {
        Clock {
            controlled: Some(clock),
        }
    }

    /// The current time in stored units.
    pub(crate) fn now(&self) -> Millis {
        #[cfg(feature = "testing")]
        if let Some(clock) = &self.controlled {
            return clock.now_millis();
        }
        now_millis()
    }

    /// The current time as a `SystemTime`.
    pub(crate) fn system_now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now()).unwrap_or(0))
    }

    /// Has an advance of a controlled clock wake this client's dispatcher.
    pub(crate) fn attach(&self, _wake: &std::sync::Arc<tokio::sync::Notify>) {
        #[cfg(feature = "testing")]
        if let Some(clock) = &self.controlled {
            clock.attach(_wake);
        }
    }

    /// Whether a test moves this clock: then nothing becomes due by waiting, only by an
    /// `advance`, which wakes the dispatcher itself.
    pub(crate) fn is_controlled(&self) -> bool {
        #[cfg(feature = "testing")]
        if self.controlled.is_some() {
            return true;
        }
        false
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_controlled() {
            "Clock::Controlled"
        } else {
            "Clock::Wall"
        })
    }
}
