//! Hands camera frames from the capture thread to inference without ever queueing stale
//! ones: a fixed pool of frame buffers, and fixed-capacity `heapless` queues of their
//! indices. The capture side overwrites the oldest unread frame when inference is busy; the
//! inference side takes the newest and discards anything older. Nothing is allocated after
//! start-up.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use heapless::{Deque, Vec as FixedVec};
use image::RgbImage;

/// Frame buffers in the pool: one being written, one waiting, one being processed.
pub const SLOTS: usize = 3;

pub struct FrameSlot {
    pub rgb: RgbImage,
    pub sequence: u32,
    pub captured_at: Instant,
}

struct Queues {
    free: FixedVec<usize, SLOTS>,
    ready: Deque<usize, SLOTS>,
    dropped: u64,
}

pub struct FrameExchange {
    slots: [Mutex<FrameSlot>; SLOTS],
    queues: Mutex<Queues>,
    arrived: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these plain buffers inconsistent: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FrameExchange {
    /// A pool of `width`×`height` RGB frames.
    pub fn new(width: u32, height: u32) -> Self {
        let slot = || {
            Mutex::new(FrameSlot {
                rgb: RgbImage::new(width, height),
                sequence: 0,
                captured_at: Instant::now(),
            })
        };
        let mut free = FixedVec::new();
        for i in 0..SLOTS {
            let _ = free.push(i);
        }
        Self {
            slots: [slot(), slot(), slot()],
            queues: Mutex::new(Queues {
                free,
                ready: Deque::new(),
                dropped: 0,
            }),
            arrived: Condvar::new(),
        }
    }

    /// Capture side: a slot to write the next frame into. When none is free, the oldest
    /// unread frame is given up (it would be stale by the time inference got to it).
    pub fn slot_to_fill(&self) -> usize {
        let mut q = lock(&self.queues);
        if let Some(i) = q.free.pop() {
            return i;
        }
        q.dropped += 1;
        q.ready
            .pop_front()
            .expect("with SLOTS slots, one is free or ready unless two are in use by one side")
    }

    /// Capture side: the slot is filled; make it the newest frame.
    pub fn publish(&self, slot: usize) {
        let mut q = lock(&self.queues);
        // Cannot overflow: a slot is in exactly one place at a time.
        let _ = q.ready.push_back(slot);
        drop(q);
        self.arrived.notify_one();
    }

    /// Inference side: the newest frame, waiting up to `timeout`. Older unread frames are
    /// dropped. Give the slot back with [`release`](Self::release) when done.
    pub fn take_newest(&self, timeout: Duration) -> Option<usize> {
        let mut q = lock(&self.queues);
        if q.ready.is_empty() {
            q = self
                .arrived
                .wait_timeout_while(q, timeout, |q| q.ready.is_empty())
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let newest = q.ready.pop_back()?;
        while let Some(stale) = q.ready.pop_front() {
            q.dropped += 1;
            let _ = q.free.push(stale);
        }
        Some(newest)
    }

    /// Either side: a slot is free again (inference is done with it, or capture took it and
    /// could not fill it).
    pub fn release(&self, slot: usize) {
        let _ = lock(&self.queues).free.push(slot);
    }

    pub fn slot(&self, slot: usize) -> MutexGuard<'_, FrameSlot> {
        lock(&self.slots[slot])
    }

    /// Frames captured but never processed because a newer one arrived first.
    pub fn dropped(&self) -> u64 {
        lock(&self.queues).dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_always_gets_the_newest_frame() {
        let ex = FrameExchange::new(2, 2);
        // Capture runs ahead: five frames while inference is busy.
        for seq in 1..=5 {
            let s = ex.slot_to_fill();
            ex.slot(s).sequence = seq;
            ex.publish(s);
        }
        let s = ex.take_newest(Duration::ZERO).unwrap();
        assert_eq!(ex.slot(s).sequence, 5);
        assert!(
            ex.take_newest(Duration::ZERO).is_none(),
            "stale frames were dropped"
        );
        assert_eq!(ex.dropped(), 4);
        // While inference holds a slot, capture cycles through the other two.
        for seq in 6..=9 {
            let f = ex.slot_to_fill();
            assert_ne!(f, s);
            ex.slot(f).sequence = seq;
            ex.publish(f);
        }
        ex.release(s);
        let s = ex.take_newest(Duration::ZERO).unwrap();
        assert_eq!(ex.slot(s).sequence, 9);
    }

    #[test]
    fn waiting_reader_wakes_on_publish() {
        let ex = std::sync::Arc::new(FrameExchange::new(2, 2));
        let writer = {
            let ex = ex.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let s = ex.slot_to_fill();
                ex.slot(s).sequence = 42;
                ex.publish(s);
            })
        };
        let s = ex.take_newest(Duration::from_secs(10)).unwrap();
        assert_eq!(ex.slot(s).sequence, 42);
        writer.join().unwrap();
    }
}
