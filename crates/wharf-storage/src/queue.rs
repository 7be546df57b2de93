//! A shard writer's command queue. Commands are queued at once, in the order they are sent, as
//! on a channel; what differs is the writer's wake-up. Inside a [`WakeWritersLater`] scope
//! (a produce request handing its partitions to storage) the wake-up of a sleeping writer is
//! put off to the end of the scope, so the writer wakes once and one group commit covers
//! every partition the request sent to its shard, instead of waking at the first and
//! committing the rest a few at a time.
//!
//! Only the wake-up waits, never the command: the order of commands in a queue is the order
//! of the sends, inside a scope or not. A writer also wakes by itself every tick, so a scope
//! that never ended would delay appends by a tick, not lose them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(crate) enum Recv<T> {
    Command(T),
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

struct Inner<T> {
    commands: VecDeque<T>,
    senders: usize,
    /// The receiver is gone: sends fail.
    closed: bool,
    /// The receiver waits on `ready`.
    sleeping: bool,
}

pub(crate) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
}

impl<T> Queue<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        if self.lock().sleeping {
            self.ready.notify_one();
        }
    }
}

/// A queue with one receiver (the writer thread) and any number of senders.
pub(crate) fn queue<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    let queue = Arc::new(Queue {
        inner: Mutex::new(Inner {
            commands: VecDeque::new(),
            senders: 1,
            closed: false,
            sleeping: false,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            queue: queue.clone(),
        },
        Receiver { queue },
    )
}

pub(crate) struct Sender<T: Send + 'static> {
    queue: Arc<Queue<T>>,
}

impl<T: Send + 'static> Sender<T> {
    /// Queues `command` and wakes the receiver if it sleeps. Fails, handing `command` back,
    /// once the receiver is gone.
    pub fn send(&self, command: T) -> Result<(), T> {
        self.queue_and_wake(command, false)
    }

    /// As `send`, but inside a [`WakeWritersLater`] scope on this thread the wake-up is put
    /// off to the scope's end.
    pub fn send_waking_later(&self, command: T) -> Result<(), T> {
        self.queue_and_wake(command, true)
    }

    fn queue_and_wake(&self, command: T, may_wait: bool) -> Result<(), T> {
        let sleeping = {
            let mut inner = self.queue.lock();
            if inner.closed {
                return Err(command);
            }
            inner.commands.push_back(command);
            inner.sleeping
        };
        if sleeping && !(may_wait && later::defer(&self.queue)) {
            self.queue.ready.notify_one();
        }
        Ok(())
    }
}

impl<T: Send + 'static> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.queue.lock().senders += 1;
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut inner = self.queue.lock();
            inner.senders -= 1;
            inner.senders == 0
        };
        if last {
            self.queue.ready.notify_one();
        }
    }
}

pub(crate) struct Receiver<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Receiver<T> {
    /// The next command, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv<T> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.queue.lock();
        loop {
            if let Some(command) = inner.commands.pop_front() {
                return Recv::Command(command);
            }
            if inner.senders == 0 {
                return Recv::Disconnected;
            }
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            inner.sleeping = true;
            inner = self
                .queue
                .ready
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            inner.sleeping = false;
        }
    }

    /// The next command if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        self.queue.lock().commands.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.closed = true;
        // Replies of commands never taken are dropped: their senders see the shard gone.
        inner.commands.clear();
    }
}

/// While alive, sends made with `send_waking_later` on this thread wake their sleeping
/// receivers only when the outermost scope ends. Scopes nest.
#[must_use = "the wake-ups are put off only while the scope lives"]
pub struct WakeWritersLater {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl WakeWritersLater {
    pub fn begin() -> Self {
        later::enter();
        Self {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for WakeWritersLater {
    fn drop(&mut self) {
        later::leave();
    }
}

mod later {
    use super::{Arc, Queue, RefCell};

    /// A queue whose receiver waits for a wake-up put off in a scope.
    trait Wake {
        fn wake(&self);
        fn id(&self) -> usize;
    }

    impl<T> Wake for Queue<T> {
        fn wake(&self) {
            Queue::wake(self);
        }
        fn id(&self) -> usize {
            std::ptr::from_ref(self) as usize
        }
    }

    #[derive(Default)]
    struct Scope {
        depth: usize,
        owed: Vec<Arc<dyn Wake + Send + Sync>>,
    }

    thread_local! {
        static SCOPE: RefCell<Scope> = RefCell::new(Scope::default());
    }

    pub(super) fn enter() {
        SCOPE.with(|s| s.borrow_mut().depth += 1);
    }

    /// Ends a scope; the outermost wakes every receiver owed a wake-up, once each.
    pub(super) fn leave() {
        let owed = SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            s.depth = s.depth.saturating_sub(1);
            if s.depth == 0 {
                std::mem::take(&mut s.owed)
            } else {
                Vec::new()
            }
        });
        for queue in owed {
            queue.wake();
        }
    }

    /// Notes that `queue`'s receiver is owed a wake-up when the scope ends; false outside a
    /// scope (the caller wakes it now).
    pub(super) fn defer<T: Send + 'static>(queue: &Arc<Queue<T>>) -> bool {
        SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            if s.depth == 0 {
                return false;
            }
            if !s.owed.iter().any(|q| q.id() == queue.id()) {
                let owed: Arc<dyn Wake + Send + Sync> = queue.clone();
                s.owed.push(owed);
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_out_in_the_order_sent_and_the_last_sender_disconnects() {
        let (tx, rx) = queue::<u32>();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send_waking_later(2).unwrap();
        tx.send(3).unwrap();
        for want in [1, 2, 3] {
            assert!(
                matches!(rx.recv_timeout(Duration::from_secs(5)), Recv::Command(n) if n == want)
            );
        }
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Recv::Timeout
        ));
        drop(tx);
        tx2.send(4).unwrap();
        drop(tx2);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Recv::Command(4)
        ));
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Recv::Disconnected
        ));
    }

    #[test]
    fn a_send_to_a_dropped_receiver_fails_with_its_command() {
        let (tx, rx) = queue::<u32>();
        drop(rx);
        assert!(matches!(tx.send(7), Err(7)));
    }

    /// A sleeping receiver is not woken by sends inside a scope, only at its end, and then
    /// finds every command; outside a scope each send wakes it.
    #[test]
    fn a_scope_puts_the_wake_up_off_to_its_end() {
        let (tx, rx) = queue::<u32>();
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let receiver = std::thread::spawn(move || loop {
            match rx.recv_timeout(Duration::from_secs(3600)) {
                Recv::Command(n) => {
                    let mut batch = vec![n];
                    while let Some(n) = rx.try_recv() {
                        batch.push(n);
                    }
                    got_tx.send(batch).unwrap();
                }
                Recv::Timeout => {}
                Recv::Disconnected => return,
            }
        });
        let wait_until_sleeping = || {
            while !tx.queue.lock().sleeping {
                std::thread::yield_now();
            }
        };
        wait_until_sleeping();
        {
            let _later = WakeWritersLater::begin();
            let nested = WakeWritersLater::begin();
            for n in 0..100 {
                tx.send_waking_later(n).unwrap();
            }
            drop(nested);
            assert!(tx.queue.lock().sleeping, "still asleep inside the scope");
        }
        assert_eq!(
            got_rx.recv_timeout(Duration::from_secs(60)).unwrap(),
            (0..100).collect::<Vec<_>>(),
            "woken once at the end, every command there"
        );
        wait_until_sleeping();
        tx.send(100).unwrap();
        assert_eq!(
            got_rx.recv_timeout(Duration::from_secs(60)).unwrap(),
            vec![100]
        );
        drop(tx);
        receiver.join().unwrap();
    }
}
