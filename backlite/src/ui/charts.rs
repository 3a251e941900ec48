//! The charts of the last hour, drawn on the server as SVG: per queue, the tasks that
//! succeeded, failed and were retried in each minute (stacked bars), and the queue's depth,
//! waiting and running tasks, as sampled each minute (lines). They read the per-minute
//! counters (`storage/counters.rs`); nothing is loaded or run in the browser to draw them.

use std::collections::BTreeMap;

use super::format;
use crate::storage::Millis;
use crate::storage::counters::{Depth, MINUTE, MinuteCounts, minute_of};
use crate::utc::utc;

/// Minutes a chart spans, the current one last.
pub(crate) const MINUTES: usize = 60;

/// The drawing's size, in SVG units; the page scales it to its width.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// Room above the tallest bar.
const TOP: f64 = 6.0;
const SLOT: f64 = WIDTH / MINUTES as f64;

/// One queue's charts, or the sum of every queue's.
pub(crate) struct QueueCharts {
    pub(crate) queue: String,
    /// Tasks ended in the hour, for the heading: "1,204 succeeded · 3 failed · 9 retried".
    pub(crate) summary: String,
    pub(crate) outcomes: Chart,
    pub(crate) depth: Chart,
}

impl QueueCharts {
    /// Both charts, in the order the page shows them.
    pub(crate) fn both(&self) -> [&Chart; 2] {
        [&self.outcomes, &self.depth]
    }
}

/// An SVG chart: bars and lines in a `WIDTH` × `HEIGHT` box.
pub(crate) struct Chart {
    /// What it shows, for screen readers: `aria-label`.
    pub(crate) label: String,
    pub(crate) width: f64,
    pub(crate) height: f64,
    /// The value the top of the box stands for.
    pub(crate) max: String,
    pub(crate) bars: Vec<Bar>,
    pub(crate) lines: Vec<Line>,
    /// Nothing to draw: no count, or no sample, in the hour.
    pub(crate) empty: bool,
}

pub(crate) struct Bar {
    pub(crate) x: String,
    pub(crate) y: String,
    pub(crate) width: String,
    pub(crate) height: String,
    /// `succeeded`, `failed` or `retried`: the colour, from the stylesheet.
    pub(crate) class: &'static str,
    /// The tooltip: "10:42 UTC: 12 succeeded".
    pub(crate) title: String,
}

/// A run of consecutive sampled minutes, as SVG `points`.
pub(crate) struct Line {
    /// `waiting` or `running`.
    pub(crate) class: &'static str,
    pub(crate) points: String,
}

/// The charts of every queue in `counts` (the last [`MINUTES`] minutes up to `now`), the sum
/// of all of them first when there is more than one queue.
pub(crate) fn charts(counts: &[MinuteCounts], now: Millis) -> Vec<QueueCharts> {
    let last = minute_of(now);
    let first = last - (MINUTES as i64 - 1) * MINUTE;
    let mut queues: BTreeMap<&str, Vec<&MinuteCounts>> = BTreeMap::new();
    for c in counts.iter().filter(|c| (first..=last).contains(&c.minute)) {
        queues.entry(c.queue.as_str()).or_default().push(c);
    }
    let mut out = Vec::new();
    if queues.len() > 1 {
        let all: Vec<&MinuteCounts> = queues.values().flatten().copied().collect();
        out.push(queue_charts("every queue", &all, first));
    }
    for (queue, counts) in &queues {
        out.push(queue_charts(queue, counts, first));
    }
    out
}

/// Per minute slot: outcomes summed, and depth summed over the queues sampled in it.
#[derive(Default, Clone, Copy)]
struct Slot {
    outcomes: [u64; 3],
    depth: Option<Depth>,
}

fn queue_charts(queue: &str, counts: &[&MinuteCounts], first: Millis) -> QueueCharts {
    let mut slots = [Slot::default(); MINUTES];
    for c in counts {
        let Ok(i) = usize::try_from((c.minute - first) / MINUTE) else {
            continue;
        };
        let Some(slot) = slots.get_mut(i) else {
            continue;
        };
        slot.outcomes[0] += c.succeeded;
        slot.outcomes[1] += c.failed;
        slot.outcomes[2] += c.retried;
        if let Some(d) = c.depth {
            let sum = slot.depth.get_or_insert_with(Depth::default);
            sum.waiting += d.waiting;
            sum.running += d.running;
        }
    }
    let totals = slots.iter().fold([0u64; 3], |t, s| {
        [
            t[0] + s.outcomes[0],
            t[1] + s.outcomes[1],
            t[2] + s.outcomes[2],
        ]
    });
    QueueCharts {
        queue: queue.to_owned(),
        summary: format!(
            "{} succeeded · {} failed · {} retried",
            format::count(totals[0]),
            format::count(totals[1]),
            format::count(totals[2])
        ),
        outcomes: outcome_chart(queue, &slots, first),
        depth: depth_chart(queue, &slots),
    }
}

const OUTCOMES: [(&str, &str); 3] = [
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("retried", "retried"),
];

fn outcome_chart(queue: &str, slots: &[Slot; MINUTES], first: Millis) -> Chart {
    let max = slots
        .iter()
        .map(|s| s.outcomes.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let scale = scale(max);
    let mut bars = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let mut base = HEIGHT;
        let at = clock(first + i as i64 * MINUTE);
        for (n, (class, label)) in slot.outcomes.iter().zip(OUTCOMES) {
            if *n == 0 {
                continue;
            }
            let h = (*n as f64 / scale * (HEIGHT - TOP)).max(1.0);
            base -= h;
            bars.push(Bar {
                x: num(i as f64 * SLOT + 1.0),
                y: num(base),
                width: num(SLOT - 2.0),
                height: num(h),
                class,
                title: format!("{at}: {} {label}", format::count(*n)),
            });
        }
    }
    Chart {
        label: format!("Tasks of {queue} that succeeded, failed and were retried, per minute"),
        width: WIDTH,
        height: HEIGHT,
        max: format::count(scale as u64),
        empty: bars.is_empty(),
        bars,
        lines: Vec::new(),
    }
}

fn depth_chart(queue: &str, slots: &[Slot; MINUTES]) -> Chart {
    let max = slots
        .iter()
        .filter_map(|s| s.depth)
        .map(|d| d.waiting.max(d.running))
        .max()
        .unwrap_or(0);
    let scale = scale(max);
    let y = |n: u64| HEIGHT - n as f64 / scale * (HEIGHT - TOP);
    let mut lines = Vec::new();
    for (class, pick) in [
        ("waiting", (|d: Depth| d.waiting) as fn(Depth) -> u64),
        ("running", |d: Depth| d.running),
    ] {
        // A minute without a sample (no started client then) breaks the line.
        let mut run: Vec<String> = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            match slot.depth {
                Some(d) => {
                    let x = i as f64 * SLOT + SLOT / 2.0;
                    run.push(format!("{},{}", num(x), num(y(pick(d)))));
                }
                None => flush(&mut lines, class, &mut run),
            }
        }
        flush(&mut lines, class, &mut run);
    }
    // A lone sample is drawn as a short flat line, to be seen.
    for line in &mut lines {
        if !line.points.contains(' ') {
            if let Some((x, y)) = line.points.split_once(',') {
                let x: f64 = x.parse().unwrap_or(0.0);
                line.points = format!("{},{y} {},{y}", num(x - SLOT / 2.0), num(x + SLOT / 2.0));
            }
        }
    }
    let sampled = slots.iter().any(|s| s.depth.is_some());
    Chart {
        label: format!("Waiting and running tasks of {queue}, sampled each minute"),
        width: WIDTH,
        height: HEIGHT,
        max: format::count(scale as u64),
        bars: Vec::new(),
        lines,
        empty: !sampled,
    }
}

fn flush(lines: &mut Vec<Line>, class: &'static str, run: &mut Vec<String>) {
    if !run.is_empty() {
        lines.push(Line {
            class,
            points: run.join(" "),
        });
        run.clear();
    }
}

/// The value the top of a chart stands for: `max` rounded up to 1, 2 or 5 times a power of
/// ten (at least 1), so that the label reads well.
fn scale(max: u64) -> f64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if let Some(top) = step.checked_mul(m) {
                if top >= max {
                    return top as f64;
                }
            }
        }
        match step.checked_mul(10) {
            Some(next) => step = next,
            None => return max as f64,
        }
    }
}

/// A coordinate with at most two decimals.
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// "10:42 UTC".
fn clock(at: Millis) -> String {
    let (_, time, _) = utc(at);
    format!("{} UTC", &time[..5])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(
        minute: i64,
        queue: &str,
        s: u64,
        f: u64,
        r: u64,
        depth: Option<(u64, u64)>,
    ) -> MinuteCounts {
        MinuteCounts {
            minute,
            queue: queue.to_owned(),
            succeeded: s,
            failed: f,
            retried: r,
            depth: depth.map(|(waiting, running)| Depth { waiting, running }),
        }
    }

    #[test]
    fn scales_round_up_to_one_two_or_five() {
        let tops: Vec<f64> = [0, 1, 2, 3, 7, 10, 11, 49, 51, 999, 1001]
            .into_iter()
            .map(scale)
            .collect();
        assert_eq!(
            tops,
            [1., 1., 2., 5., 10., 10., 20., 50., 100., 1000., 2000.]
        );
        assert_eq!(num(12.5), "12.5");
        assert_eq!(num(10.0), "10");
        assert_eq!(num(1.0 / 3.0), "0.33");
    }

    #[test]
    fn the_hour_is_drawn_a_minute_a_slot_with_every_queue_summed_first() {
        let now = 1_000 * MINUTE + 30_000;
        let last = minute_of(now);
        let counts = [
            // Too old: an hour and a minute ago.
            c(last - 60 * MINUTE, "a", 99, 0, 0, None),
            c(last - 59 * MINUTE, "a", 3, 1, 0, Some((4, 1))),
            c(last, "a", 1, 0, 1, None),
            c(last, "b", 6, 0, 0, Some((10, 2))),
        ];
        let charts = charts(&counts, now);
        let names: Vec<&str> = charts.iter().map(|q| q.queue.as_str()).collect();
        assert_eq!(names, ["every queue", "a", "b"]);
        let all = &charts[0];
        assert_eq!(all.summary, "10 succeeded · 1 failed · 1 retried");
        // The last minute holds 1 + 1 of a and 6 of b: the top is 10.
        assert_eq!(all.outcomes.max, "10");
        let a = &charts[1];
        assert_eq!(a.summary, "4 succeeded · 1 failed · 1 retried");
        // The first slot: 3 succeeded under 1 failed, stacked from the bottom.
        let first: Vec<(&str, &str, &str, &str)> = a
            .outcomes
            .bars
            .iter()
            .map(|b| (b.class, b.x.as_str(), b.y.as_str(), b.height.as_str()))
            .collect();
        let h = |n: f64| num(n / 5.0 * (HEIGHT - TOP));
        assert_eq!(
            first[0],
            (
                "succeeded",
                "1",
                &*num(HEIGHT - 3.0 / 5.0 * (HEIGHT - TOP)),
                &*h(3.0)
            )
        );
        assert_eq!(first[1].0, "failed");
        assert_eq!(first[2].1, num(59.0 * SLOT + 1.0));
        assert!(a.outcomes.bars[0].title.ends_with(" UTC: 3 succeeded"));
        // Depth: a's single sample is a short flat line; b's too, on its own scale.
        assert_eq!(a.depth.lines.len(), 2);
        assert!(!a.depth.empty);
        assert_eq!(a.depth.max, "5");
        let b = &charts[2];
        assert_eq!(b.depth.max, "10");
        assert_eq!(b.depth.lines[0].class, "waiting");
        assert_eq!(
            b.depth.lines[0].points,
            format!("{},6 {},6", num(59.0 * SLOT), num(60.0 * SLOT))
        );
    }

    #[test]
    fn an_unsampled_minute_breaks_the_depth_line_and_nothing_is_empty_drawing() {
        let now = 500 * MINUTE;
        let last = minute_of(now);
        let counts = [
            c(last - 3 * MINUTE, "a", 0, 0, 0, Some((1, 0))),
            c(last - 2 * MINUTE, "a", 0, 0, 0, Some((2, 0))),
            c(last, "a", 0, 0, 0, Some((3, 0))),
        ];
        let drawn = charts(&counts, now);
        assert_eq!(drawn.len(), 1);
        let waiting: Vec<&Line> = drawn[0]
            .depth
            .lines
            .iter()
            .filter(|l| l.class == "waiting")
            .collect();
        assert_eq!(waiting.len(), 2, "two runs of samples");
        assert!(drawn[0].outcomes.empty);
        assert!(charts(&[], now).is_empty());
    }
}
