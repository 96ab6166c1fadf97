//! A virtual clock for psi's Infisical client ([`psi::provider::infisical::Clock`]) that
//! drives a discrete-event simulation: time stands still while any participating task runs
//! (network I/O included) and jumps to the earliest wake-up once every one of them sleeps.
//! Tests and the fleet bench wait out `Retry-After`s and timer offsets in no wall time, and
//! the order of events is the one real time would give.
//!
//! Every task that sleeps on the clock must be counted with [`VirtualClock::enter`] (the
//! guard leaves when dropped); a task that is not counted would let time run on without it.
//! Each jump calls the `on_advance` hook, which moves the fake Infisical's clock in step.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use psi::provider::infisical::Clock;
use tokio::sync::oneshot;

type Hook = Box<dyn Fn(SystemTime) + Send + Sync>;

pub struct VirtualClock {
    start: SystemTime,
    sched: Mutex<Sched>,
    on_advance: Hook,
}

#[derive(Default)]
struct Sched {
    /// Time since `start`.
    now: Duration,
    /// Tasks counted by `enter` and not yet left.
    tasks: usize,
    sleepers: BinaryHeap<Reverse<(Duration, u64)>>,
    wakers: HashMap<u64, oneshot::Sender<()>>,
    next: u64,
    /// Every sleep asked for, in order.
    slept: Vec<Duration>,
}

/// Counts a task as running until dropped.
pub struct Entered(Arc<VirtualClock>);

impl Drop for Entered {
    fn drop(&mut self) {
        let mut sched = self.0.sched.lock().unwrap();
        sched.tasks -= 1;
        self.0.advance(&mut sched);
    }
}

impl VirtualClock {
    /// A clock standing at `start`; `on_advance` is called with the new time at every jump.
    pub fn new(
        start: SystemTime,
        on_advance: impl Fn(SystemTime) + Send + Sync + 'static,
    ) -> Arc<VirtualClock> {
        Arc::new(VirtualClock {
            start,
            sched: Mutex::new(Sched::default()),
            on_advance: Box::new(on_advance),
        })
    }

    /// Counts the calling task until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Entered {
        self.sched.lock().unwrap().tasks += 1;
        Entered(self.clone())
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sched.lock().unwrap().now
    }

    /// Every sleep asked for so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.sched.lock().unwrap().slept.clone()
    }

    /// While every counted task sleeps, jumps to the earliest wake-up and wakes those due.
    fn advance(&self, sched: &mut Sched) {
        while sched.tasks > 0 && sched.sleepers.len() >= sched.tasks {
            let Some(Reverse((due, _))) = sched.sleepers.peek().copied() else {
                return;
            };
            if due > sched.now {
                sched.now = due;
                (self.on_advance)(self.start + due);
            }
            while let Some(Reverse((at, id))) = sched.sleepers.peek().copied() {
                if at > due {
                    break;
                }
                sched.sleepers.pop();
                if let Some(waker) = sched.wakers.remove(&id) {
                    let _ = waker.send(());
                }
            }
        }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        self.start + self.sched.lock().unwrap().now
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut sched = self.sched.lock().unwrap();
            sched.slept.push(duration);
            let (id, due) = (sched.next, sched.now + duration);
            sched.next += 1;
            sched.sleepers.push(Reverse((due, id)));
            sched.wakers.insert(id, tx);
            self.advance(&mut sched);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
