//! Periodic tasks: a task enqueued at every tick of a [`Schedule`], once per tick across every
//! process on the database, with no leader.
//!
//! Each schedule is a row in the database, named by its task's queue (plus the schedule's
//! [`name`](Schedule::name), if given) so that every process running the same code agrees on
//! it, and holding the next tick to enqueue. A started client sleeps until the earliest next
//! tick of its schedules, then tries to enqueue it. Two guards make a tick single:
//!
//! - the claim of a tick moves the stored next tick from that tick to the following one, and
//!   only if it still holds that tick (compare-and-set), in the transaction that inserts the
//!   tick's task: of several processes that try, one moves it, the others change nothing;
//! - the task's id is made of the schedule's name and the tick's time (a UUID v7 whose time is
//!   the tick), so a second insert of the same tick meets the first one's primary key.
//!
//! Times: an interval schedule ticks at the multiples of its interval since the Unix epoch
//! (UTC), so processes started at different times agree on its ticks; a cron schedule ticks in
//! UTC unless given a time zone. Whether a tick is due is decided on the storage's clock (the
//! server's, on PostgreSQL), so hosts whose clocks disagree still agree.

mod ticker;

use std::time::Duration;

use chrono::TimeZone as _;

use crate::error::{Error, Result};
use crate::storage::Millis;
use crate::task::TaskId;

pub(crate) use ticker::{PeriodicTask, Ticker};

/// When a periodic task is enqueued: every fixed interval, or at the times a cron expression
/// names.
///
/// ```
/// use std::time::Duration;
/// use backlite::{CatchUp, Schedule};
///
/// // At 00:00, 00:05, 00:10, ... UTC (intervals count from the Unix epoch).
/// let every = Schedule::every(Duration::from_secs(300));
/// // At second 0 of every fifth minute; six fields: the first is the second.
/// let cron = Schedule::cron("0 */5 * * * *")?;
/// // At 09:00 on weekdays, Paris time, and after a downtime every missed day, up to a week.
/// let daily = Schedule::cron("0 9 * * MON-FRI")?
///     .in_timezone("Europe/Paris")?
///     .catch_up(CatchUp::All { limit: 7 })
///     .name("morning-report");
/// # Ok::<(), backlite::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    timing: Timing,
    catch_up: CatchUp,
    name: Option<String>,
}

#[derive(Debug, Clone)]
enum Timing {
    Every(Duration),
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
        zone: chrono_tz::Tz,
    },
}

/// What a schedule does with the ticks that passed while no process of the database was
/// running it (a tick is missed when the tick after it is due too). The next tick is always
/// the first one after the moment the schedule is checked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CatchUp {
    /// Drops missed ticks: nothing runs for them. A tick that is due alone (checked late by
    /// less than one interval) still runs.
    Skip,
    /// Runs once for all the ticks that are due, as the latest of them.
    #[default]
    Once,
    /// Runs every tick that is due, oldest first, up to the `limit` latest ones; older ones
    /// are dropped. A `limit` of 0 counts as 1.
    All {
        /// The most ticks enqueued at once.
        limit: u32,
    },
}

impl Schedule {
    /// Every `interval`, at the multiples of it since the Unix epoch: every 5 minutes ticks at
    /// :00, :05, :10, ... UTC. Intervals are counted in milliseconds; a zero interval is
    /// refused by [`ClientBuilder::build`](crate::ClientBuilder::build).
    pub fn every(interval: Duration) -> Schedule {
        Schedule {
            timing: Timing::Every(interval),
            catch_up: CatchUp::default(),
            name: None,
        }
    }

    /// At the times a cron expression names, in UTC (see [`in_timezone`](Self::in_timezone)).
    /// Five fields (minute, hour, day of month, month, day of week) or six, the first being
    /// the second; with the `L`, `#` and `W` extensions and names of months and days.
    ///
    /// # Errors
    ///
    /// [`Error::Cron`] naming the expression when it cannot be parsed.
    pub fn cron(expression: &str) -> Result<Schedule> {
        let cron = crate::rules::parse_cron(expression).map_err(|e| Error::Cron {
            expression: expression.to_owned(),
            source: Box::new(e),
        })?;
        Ok(Schedule {
            timing: Timing::Cron {
                expression: expression.to_owned(),
                cron: Box::new(cron),
                zone: chrono_tz::Tz::UTC,
            },
            catch_up: CatchUp::default(),
            name: None,
        })
    }

    /// Reads a cron expression in a time zone of the IANA database (`"Europe/Paris"`), with
    /// its daylight-saving changes. An interval schedule is the same in every zone, and keeps
    /// ticking from the epoch.
    ///
    /// # Errors
    ///
    /// [`Error::TimeZone`] when the name is not a zone of the database.
    pub fn in_timezone(mut self, zone: &str) -> Result<Schedule> {
        let parsed: chrono_tz::Tz = zone.parse().map_err(|_| Error::TimeZone {
            zone: zone.to_owned(),
        })?;
        if let Timing::Cron { zone, .. } = &mut self.timing {
            *zone = parsed;
        }
        Ok(self)
    }

    /// What to do with ticks missed while no process ran: [`CatchUp::Once`] unless set.
    pub fn catch_up(mut self, policy: CatchUp) -> Schedule {
        self.catch_up = policy;
        self
    }

    /// Names the schedule, to tell apart two schedules of one queue. The stored schedule is
    /// found by its queue and this name, so keep both stable across deploys: a renamed
    /// schedule starts afresh, and the old one stays in the database unused.
    pub fn name(mut self, name: impl Into<String>) -> Schedule {
        self.name = Some(name.into());
        self
    }

    /// The schedule as written: when the stored one differs, the schedule was changed.
    pub(crate) fn definition(&self) -> String {
        match &self.timing {
            Timing::Every(interval) => format!("every {}ms", interval.as_millis()),
            Timing::Cron {
                expression, zone, ..
            } => format!("cron {} in {}", expression.trim(), zone.name()),
        }
    }

    /// The stored name of this schedule for a task of `queue`.
    pub(crate) fn stored_name(&self, queue: &str) -> String {
        match &self.name {
            Some(name) => format!("{queue}:{name}"),
            None => queue.to_owned(),
        }
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        match self.timing {
            Timing::Every(interval) if interval.as_millis() == 0 => Err(format!(
                "a periodic interval must be at least 1ms, got {interval:?}"
            )),
            _ => Ok(()),
        }
    }

    /// The first tick strictly after `time`; `None` when there is none (a cron expression
    /// that names no time to come).
    pub(crate) fn next_after(&self, time: Millis) -> Option<Millis> {
        match &self.timing {
            Timing::Every(interval) => {
                let step = interval_millis(*interval);
                time.div_euclid(step).checked_add(1)?.checked_mul(step)
            }
            Timing::Cron { cron, zone, .. } => {
                // Cron ticks fall on whole seconds: the first after `time` is the first after
                // the second `time` falls in.
                let start = zone
                    .timestamp_millis_opt(time.div_euclid(1000) * 1000)
                    .single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The last tick at or before `time`.
    pub(crate) fn last_at_or_before(&self, time: Millis) -> Option<Millis> {
        match &self.timing {
            Timing::Every(interval) => {
                let step = interval_millis(*interval);
                time.div_euclid(step).checked_mul(step)
            }
            Timing::Cron { cron, zone, .. } => {
                let start = zone
                    .timestamp_millis_opt(time.div_euclid(1000) * 1000)
                    .single()?;
                let last = cron.find_previous_occurrence(&start, true).ok()?;
                Some(last.timestamp_millis())
            }
        }
    }

    /// The tick before `tick`.
    fn previous(&self, tick: Millis) -> Option<Millis> {
        self.last_at_or_before(tick.checked_sub(1)?)
    }

    /// What to enqueue when the stored next tick is `stored` and the time is `now`: the ticks,
    /// oldest first, and the next tick to store. `None` when nothing is due yet.
    pub(crate) fn plan(&self, stored: Millis, now: Millis) -> Option<Plan> {
        if stored > now {
            return None;
        }
        let next_run_at = self.next_after(now)?;
        // The latest due tick; a stored tick off this schedule's grid (it was stored by an
        // earlier definition) is the only one due.
        let latest = self.last_at_or_before(now).filter(|t| *t >= stored);
        let Some(latest) = latest else {
            return Some(Plan {
                ticks: vec![stored],
                next_run_at,
                dropped: 0,
            });
        };
        let keep = match self.catch_up {
            CatchUp::Skip | CatchUp::Once => 1,
            CatchUp::All { limit } => limit.max(1) as usize,
        };
        // Walk back from the latest, one past what is kept, to know whether ticks are dropped
        // and whether the latest is missed (Skip).
        let mut due = vec![latest];
        while due.len() <= keep {
            match self.previous(due[due.len() - 1]) {
                Some(earlier) if earlier >= stored => due.push(earlier),
                _ => break,
            }
        }
        let more = due.len() > keep;
        due.truncate(keep);
        due.reverse();
        let (ticks, dropped) = match self.catch_up {
            CatchUp::Skip if more => (Vec::new(), due.len() as u64 + 1),
            _ => (due, u64::from(more)),
        };
        Some(Plan {
            ticks,
            next_run_at,
            dropped,
        })
    }
}

fn interval_millis(interval: Duration) -> Millis {
    crate::storage::duration_millis(interval).max(1)
}

/// The ticks to enqueue now, and the next tick to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) ticks: Vec<Millis>,
    pub(crate) next_run_at: Millis,
    /// Whether (1) or how many (Skip) missed ticks are not enqueued: at least this many.
    pub(crate) dropped: u64,
}

/// The id of the task of a schedule's tick: a UUID v7 whose time is the tick (ids stay in
/// time order) and whose random bits are a hash of the schedule's name, the same on every
/// host and build (FNV-1a, two seeds), so two processes enqueueing one tick make one id.
pub(crate) fn tick_id(schedule: &str, tick: Millis) -> TaskId {
    let fnv = |seed: u64| {
        schedule.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (high, low) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut bits = [0u8; 10];
    bits[..8].copy_from_slice(&high.to_be_bytes());
    bits[8..].copy_from_slice(&low.to_be_bytes()[..2]);
    let millis = u64::try_from(tick).unwrap_or(0);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid();
    TaskId::from_bytes(id.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::{CatchUp, Plan, Schedule, tick_id};
    use crate::error::Error;
    use std::time::Duration;

    fn every(ms: u64, catch_up: CatchUp) -> Schedule {
        Schedule::every(Duration::from_millis(ms)).catch_up(catch_up)
    }

    fn plan(ticks: &[i64], next_run_at: i64, dropped: u64) -> Option<Plan> {
        Some(Plan {
            ticks: ticks.to_vec(),
            next_run_at,
            dropped,
        })
    }

    #[test]
    fn intervals_tick_on_multiples_since_the_epoch() {
        let s = every(300, CatchUp::Once);
        assert_eq!(s.next_after(0), Some(300));
        assert_eq!(s.next_after(299), Some(300));
        assert_eq!(s.next_after(300), Some(600));
        assert_eq!(s.last_at_or_before(599), Some(300));
        assert_eq!(s.last_at_or_before(600), Some(600));
        assert_eq!(s.definition(), "every 300ms");
    }

    #[test]
    fn cron_ticks_with_seconds_and_in_a_time_zone() {
        let s = Schedule::cron("*/10 * * * * *").unwrap();
        assert_eq!(s.next_after(1_000), Some(10_000));
        assert_eq!(s.next_after(10_000), Some(20_000));
        assert_eq!(s.next_after(10_500), Some(20_000));
        assert_eq!(s.last_at_or_before(19_999), Some(10_000));
        assert_eq!(s.last_at_or_before(20_000), Some(20_000));
        // Five fields: minutes. 2024-01-01T00:00:00Z is 1_704_067_200_000.
        let hourly = Schedule::cron("0 * * * *").unwrap();
        let jan1 = 1_704_067_200_000;
        assert_eq!(hourly.next_after(jan1), Some(jan1 + 3_600_000));
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Schedule::cron("0 9 * * *")
            .unwrap()
            .in_timezone("Europe/Paris")
            .unwrap();
        assert_eq!(paris.next_after(jan1), Some(jan1 + 8 * 3_600_000));
        assert_eq!(paris.definition(), "cron 0 9 * * * in Europe/Paris");
    }

    #[test]
    fn bad_expressions_and_zones_are_typed_errors_naming_them() {
        let e = Schedule::cron("0 */5 * * * * * *").unwrap_err();
        assert!(matches!(&e, Error::Cron { expression, .. } if expression == "0 */5 * * * * * *"));
        assert!(e.to_string().contains("0 */5 * * * * * *"), "{e}");
        assert!(matches!(
            Schedule::cron("61 * * * *"),
            Err(Error::Cron { .. })
        ));
        let e = Schedule::cron("* * * * *")
            .unwrap()
            .in_timezone("Mars/Olympus")
            .unwrap_err();
        assert!(matches!(&e, Error::TimeZone { zone } if zone == "Mars/Olympus"));
        assert!(every(0, CatchUp::Once).check().is_err());
    }

    #[test]
    fn nothing_is_planned_before_the_stored_tick() {
        assert_eq!(every(100, CatchUp::Once).plan(500, 499), None);
    }

    #[test]
    fn a_tick_due_alone_runs_under_every_policy() {
        for policy in [CatchUp::Skip, CatchUp::Once, CatchUp::All { limit: 5 }] {
            assert_eq!(every(100, policy).plan(500, 550), plan(&[500], 600, 0));
        }
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        // Stored 500, now 1_250: ticks 500..=1_200 are due, eight of them.
        assert_eq!(
            every(100, CatchUp::Skip).plan(500, 1_250),
            plan(&[], 1_300, 2)
        );
        assert_eq!(
            every(100, CatchUp::Once).plan(500, 1_250),
            plan(&[1_200], 1_300, 1)
        );
        assert_eq!(
            every(100, CatchUp::All { limit: 3 }).plan(500, 1_250),
            plan(&[1_000, 1_100, 1_200], 1_300, 1)
        );
        assert_eq!(
            every(100, CatchUp::All { limit: 100 }).plan(500, 1_250),
            plan(&[500, 600, 700, 800, 900, 1_000, 1_100, 1_200], 1_300, 0)
        );
    }

    #[test]
    fn a_stored_tick_off_the_grid_runs_once() {
        // Stored by an earlier definition (every 70 ms): due alone, then the new grid.
        assert_eq!(
            every(100, CatchUp::All { limit: 3 }).plan(1_190, 1_199),
            plan(&[1_190], 1_200, 0)
        );
    }

    #[test]
    fn tick_ids_are_the_tick_and_the_name() {
        let a = tick_id("reports", 1_700_000_000_000);
        assert_eq!(a, tick_id("reports", 1_700_000_000_000));
        assert_ne!(a, tick_id("reports:other", 1_700_000_000_000));
        assert_ne!(a, tick_id("reports", 1_700_000_000_001));
        assert!(a < tick_id("reports", 1_700_000_000_001), "time-ordered");
        let ms = a
            .timestamp()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_700_000_000_000);
    }
}
