//! A state-machine property test of the task lifecycle, for every driver: random sequences of
//! add, claim, succeed, fail, release, unclaim, stale completions and cleanup run against the
//! driver and against a simple model, and after every step each task must be where the model
//! says. No task may be lost (gone without a completion that kept nothing, or a cleanup after
//! its retention expired), and a completed task must be kept exactly when retention says so,
//! for as long as it says. (Which payloads are kept is checked by the runtime's tests.)
//!
//! A driver instantiates it with `lifecycle_model!(module_name, |queues| async { driver })`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::storage::{Millis, QueueStats};
use crate::task::{TaskId, TaskStatus};

/// Queues the driver serves; `z` has tasks but nobody serves it.
pub(crate) const SERVED: [&str; 2] = ["a", "b"];
const QUEUES: [&str; 3] = ["a", "b", "z"];

/// One step of a sequence. `pick` chooses among the tasks the step applies to.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Add {
        queues: Vec<usize>,
        delay: i64,
    },
    Claim {
        limit: usize,
    },
    Succeed {
        pick: usize,
        retain: Option<(bool, Option<i64>)>,
    },
    Fail {
        pick: usize,
        retry: Option<i64>,
        retain: Option<(bool, Option<i64>)>,
    },
    /// Completes a claimed task with a token that is not its claim's.
    Stale {
        pick: usize,
    },
    Unclaim {
        pick: usize,
    },
    /// Releases tasks claimed `age` ms ago or earlier; with `at_claim`, exactly at the claim
    /// of one claimed task, to try the boundary.
    Release {
        age: i64,
        at_claim: Option<usize>,
    },
    Cleanup,
    Advance {
        ms: i64,
    },
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    // Expiry offsets of 0 often, so that a cleanup lands exactly on an expiry.
    let expiry = prop_oneof![Just(0i64), 0i64..200];
    let retain = proptest::option::of((any::<bool>(), proptest::option::of(expiry)));
    prop_oneof![
        3 => (proptest::collection::vec(0..QUEUES.len(), 1..4), 0i64..100)
            .prop_map(|(queues, delay)| Op::Add { queues, delay }),
        3 => (1usize..5).prop_map(|limit| Op::Claim { limit }),
        2 => (any::<usize>(), retain.clone()).prop_map(|(pick, retain)| Op::Succeed { pick, retain }),
        2 => (any::<usize>(), proptest::option::of(0i64..100), retain)
            .prop_map(|(pick, retry, retain)| Op::Fail { pick, retry, retain }),
        1 => any::<usize>().prop_map(|pick| Op::Stale { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Unclaim { pick }),
        2 => (0i64..150, proptest::option::of(any::<usize>()))
            .prop_map(|(age, at_claim)| Op::Release { age, at_claim }),
        1 => Just(Op::Cleanup),
        2 => (1i64..80).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Where the model has a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Waiting {
        queue: &'static str,
        run_at: Millis,
        /// Insertion order: the claim's tie-break after `run_at`.
        seq: u64,
        attempts: u32,
        claimed_at: Option<Millis>,
    },
    Kept {
        queue: &'static str,
        succeeded: bool,
        expires_at: Option<Millis>,
    },
    Gone,
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) now: Millis,
    seq: u64,
    pub(crate) tasks: BTreeMap<TaskId, State>,
    /// Tasks whose payload must come back from a claim, as added.
    pub(crate) payloads: BTreeMap<TaskId, Vec<u8>>,
}

impl Model {
    pub(crate) fn new() -> Model {
        Model {
            now: 1_000,
            ..Model::default()
        }
    }

    pub(crate) fn add(&mut self, id: TaskId, queue: &'static str, run_at: Millis) {
        self.seq += 1;
        let state = State::Waiting {
            queue,
            run_at,
            seq: self.seq,
            attempts: 0,
            claimed_at: None,
        };
        self.tasks.insert(id, state);
    }

    /// The tasks a claim of `limit` at `now` must return, in order.
    pub(crate) fn due(&self, limit: usize) -> Vec<TaskId> {
        let mut due: Vec<(Millis, u64, TaskId)> = self
            .tasks
            .iter()
            .filter_map(|(id, state)| match state {
                State::Waiting {
                    queue,
                    run_at,
                    seq,
                    claimed_at: None,
                    ..
                } if SERVED.contains(queue) && *run_at <= self.now => Some((*run_at, *seq, *id)),
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter().take(limit).map(|(.., id)| id).collect()
    }

    pub(crate) fn claimed(&self) -> Vec<(TaskId, Millis)> {
        self.tasks
            .iter()
            .filter_map(|(id, state)| match state {
                State::Waiting {
                    claimed_at: Some(at),
                    ..
                } => Some((*id, *at)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn status(&self, id: &TaskId) -> TaskStatus {
        match &self.tasks[id] {
            State::Waiting {
                claimed_at: Some(_),
                ..
            } => TaskStatus::Running,
            State::Waiting { .. } => TaskStatus::Pending,
            State::Kept { succeeded, .. } => {
                if *succeeded {
                    TaskStatus::Succeeded
                } else {
                    TaskStatus::Failed
                }
            }
            State::Gone => TaskStatus::NotFound,
        }
    }

    pub(crate) fn next_due(&self) -> Option<Millis> {
        self.tasks
            .values()
            .filter_map(|state| match state {
                State::Waiting {
                    queue,
                    run_at,
                    claimed_at: None,
                    ..
                } if SERVED.contains(queue) => Some(*run_at),
                _ => None,
            })
            .min()
    }

    pub(crate) fn stats(&self) -> Vec<QueueStats> {
        let mut stats: BTreeMap<&str, QueueStats> = BTreeMap::new();
        for state in self.tasks.values() {
            let (queue, field): (&str, fn(&mut QueueStats) -> &mut u64) = match state {
                State::Waiting {
                    queue,
                    claimed_at: Some(_),
                    ..
                } => (queue, |s| &mut s.running),
                State::Waiting { queue, run_at, .. } if *run_at <= self.now => {
                    (queue, |s| &mut s.pending)
                }
                State::Waiting { queue, .. } => (queue, |s| &mut s.scheduled),
                State::Kept {
                    queue,
                    succeeded: true,
                    ..
                } => (queue, |s| &mut s.succeeded),
                State::Kept { queue, .. } => (queue, |s| &mut s.failed),
                State::Gone => continue,
            };
            let entry = stats.entry(queue).or_insert_with(|| QueueStats {
                queue: queue.to_owned(),
                ..QueueStats::default()
            });
            *field(entry) += 1;
        }
        stats.into_values().collect()
    }

    /// Ends an attempt of a claimed task: what `task_complete_many` must do.
    pub(crate) fn complete(
        &mut self,
        id: TaskId,
        succeeded: bool,
        retry: Option<Millis>,
        retain: Option<(bool, Option<Millis>)>,
    ) {
        let Some(State::Waiting {
            queue,
            seq,
            attempts,
            ..
        }) = self.tasks.get(&id).cloned()
        else {
            return;
        };
        let next = match (retry, retain) {
            (Some(run_at), _) => State::Waiting {
                queue,
                run_at,
                seq,
                attempts: attempts + 1,
                claimed_at: None,
            },
            (None, Some((_, expires_at))) => State::Kept {
                queue,
                succeeded,
                expires_at,
            },
            (None, None) => State::Gone,
        };
        self.tasks.insert(id, next);
    }
}

macro_rules! lifecycle_model {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use proptest::prelude::*;

            use std::collections::BTreeMap;

            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::model::{Model, Op, SERVED, State, op};
            use crate::storage::{ClaimToken, Completion, Driver, Next, Retain, wait_until};
            use crate::task::TaskId;

            fn retain(r: Option<(bool, Option<i64>)>, now: i64) -> Option<Retain> {
                r.map(|(payload, expires)| Retain {
                    payload,
                    expires_at: expires.map(|e| now + e),
                })
            }

            async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
                let Some(d) = ($open)(SERVED.to_vec()).await else {
                    return Ok(());
                };
                let mut m = Model::new();
                // The token of each task's current claim.
                let mut tokens: BTreeMap<TaskId, ClaimToken> = BTreeMap::new();
                let lease_ms = LEASE.as_millis() as i64;
                for (step, op) in ops.into_iter().enumerate() {
                    let now = m.now;
                    match op.clone() {
                        Op::Add { queues, delay } => {
                            let tasks: Vec<_> = queues
                                .iter()
                                .map(|q| {
                                    let queue = ["a", "b", "z"][*q];
                                    new_task(queue, now + delay, &format!("{{\"step\":{step}}}"))
                                })
                                .collect();
                            d.task_insert_many(tasks.clone()).await.unwrap();
                            for t in tasks {
                                m.add(t.id, t.queue, t.run_at);
                                m.payloads.insert(t.id, t.payload);
                            }
                        }
                        Op::Claim { limit } => {
                            m.now += 1;
                            let expected = m.due(limit);
                            let claimed =
                                d.task_claim(None, limit, LEASE, Some(m.now)).await.unwrap();
                            let mut got: Vec<TaskId> = claimed.iter().map(|c| c.id).collect();
                            let mut want = expected.clone();
                            got.sort();
                            want.sort();
                            prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                            for c in claimed {
                                let Some(State::Waiting { attempts, .. }) = m.tasks.get(&c.id)
                                else {
                                    unreachable!()
                                };
                                prop_assert_eq!(c.attempts, *attempts);
                                prop_assert_eq!(&c.payload, &m.payloads[&c.id]);
                                tokens.insert(c.id, c.token);
                                if let Some(State::Waiting { claimed_at, .. }) =
                                    m.tasks.get_mut(&c.id)
                                {
                                    *claimed_at = Some(m.now);
                                }
                            }
                        }
                        Op::Succeed { pick, retain: r } => {
                            let claimed = m.claimed();
                            if let Some(&(id, _)) = claimed.get(pick % claimed.len().max(1)) {
                                let token = tokens[&id];
                                d.task_complete_many(vec![done(id, token, None, retain(r, now))])
                                    .await
                                    .unwrap();
                                m.complete(id, true, None, r.map(|(p, e)| (p, e.map(|e| now + e))));
                            }
                        }
                        Op::Fail {
                            pick,
                            retry,
                            retain: r,
                        } => {
                            let claimed = m.claimed();
                            if let Some(&(id, _)) = claimed.get(pick % claimed.len().max(1)) {
                                let token = tokens[&id];
                                let completion = match retry {
                                    Some(delay) => Completion {
                                        next: Next::Retry {
                                            run_at: now + delay,
                                        },
                                        ..done(id, token, Some("failed"), None)
                                    },
                                    None => done(id, token, Some("failed"), retain(r, now)),
                                };
                                d.task_complete_many(vec![completion]).await.unwrap();
                                let r = r.map(|(p, e)| (p, e.map(|e| now + e)));
                                m.complete(id, false, retry.map(|delay| now + delay), r);
                            }
                        }
                        Op::Stale { pick } => {
                            let claimed = m.claimed();
                            if let Some(&(id, _)) = claimed.get(pick % claimed.len().max(1)) {
                                let token = tokens[&id];
                                d.task_complete_many(vec![done(
                                    id,
                                    ClaimToken {
                                        fence: token.fence - 1,
                                        ..token
                                    },
                                    None,
                                    None,
                                )])
                                .await
                                .unwrap();
                            }
                        }
                        Op::Unclaim { pick } => {
                            let claimed = m.claimed();
                            if let Some(&(id, _)) = claimed.get(pick % claimed.len().max(1)) {
                                let token = tokens[&id];
                                d.task_unclaim_many(vec![(id, token)]).await.unwrap();
                                if let Some(State::Waiting { claimed_at, .. }) =
                                    m.tasks.get_mut(&id)
                                {
                                    *claimed_at = None;
                                }
                            }
                        }
                        Op::Release { age, at_claim } => {
                            let claimed = m.claimed();
                            let before = match at_claim {
                                Some(pick) if !claimed.is_empty() => {
                                    claimed[pick % claimed.len()].1
                                }
                                _ => now - age,
                            };
                            // Leases are all `LEASE` long: the tasks claimed at or before
                            // `before` are those whose lease ends by `before + LEASE`.
                            let released =
                                d.task_release_stuck(Some(before + lease_ms)).await.unwrap();
                            let mut expected = 0;
                            for state in m.tasks.values_mut() {
                                if let State::Waiting { claimed_at, .. } = state {
                                    if claimed_at.is_some_and(|at| at <= before) {
                                        *claimed_at = None;
                                        expected += 1;
                                    }
                                }
                            }
                            prop_assert_eq!(released, expected, "step {}: {:?}", step, op);
                        }
                        Op::Cleanup => {
                            let deleted = d.completed_delete_expired(now).await.unwrap();
                            let mut expected = 0;
                            for state in m.tasks.values_mut() {
                                if let State::Kept {
                                    expires_at: Some(at),
                                    ..
                                } = state
                                {
                                    if *at <= now {
                                        *state = State::Gone;
                                        expected += 1;
                                    }
                                }
                            }
                            prop_assert_eq!(deleted, expected, "step {}: {:?}", step, op);
                        }
                        Op::Advance { ms } => m.now += ms,
                    }

                    // Every task is where the model has it.
                    for id in m.tasks.keys() {
                        let status = d.task_status(*id).await.unwrap();
                        prop_assert_eq!(
                            status,
                            m.status(id),
                            "step {}: {:?}, task {}",
                            step,
                            op,
                            id
                        );
                    }
                    prop_assert_eq!(
                        d.queue_stats(m.now).await.unwrap(),
                        m.stats(),
                        "step {}: {:?}",
                        step,
                        op
                    );
                    prop_assert_eq!(
                        d.task_next_due(Some(m.now)).await.unwrap(),
                        m.next_due().map(|due| wait_until(due, m.now)),
                        "step {}: {:?}",
                        step,
                        op
                    );
                }
                Ok(())
            }

            proptest! {
                #![proptest_config(ProptestConfig {
                    cases: 64,
                    failure_persistence: None,
                    ..ProptestConfig::default()
                })]

                #[test]
                fn the_lifecycle_follows_the_model(ops in proptest::collection::vec(op(), 1..60)) {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(run(ops))?;
                }
            }
        }
    };
}

pub(crate) use lifecycle_model;
