//! The operator's controls: the shutter (a GPIO button with debounce on a Raspberry Pi;
//! Enter on the keyboard or SIGUSR1 anywhere) and the status LED (ready / busy / error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by SIGUSR1 (and by Enter on stdin): "take a picture".
static SHUTTER_SIGNAL: AtomicBool = AtomicBool::new(false);
/// Set by SIGINT / SIGTERM: finish the current frame and stop.
static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_shutter_signal(_: libc::c_int) {
    SHUTTER_SIGNAL.store(true, Ordering::SeqCst);
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_SIGNAL.store(true, Ordering::SeqCst);
}

/// Installs the SIGUSR1 (shutter) and SIGINT/SIGTERM (stop) handlers.
pub fn install_signal_handlers() {
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_shutter_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
}

pub fn stop_requested() -> bool {
    STOP_SIGNAL.load(Ordering::SeqCst)
}

/// Debounces a raw button level sampled at irregular times: a press counts once the level has
/// been "pressed" for `hold`, and again only after a release held as long.
#[derive(Debug)]
pub struct Debouncer {
    hold: Duration,
    stable: bool,
    candidate: bool,
    since: Option<Instant>,
}

impl Debouncer {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            stable: false,
            candidate: false,
            since: None,
        }
    }

    /// Feeds one sample; true exactly once per debounced press.
    pub fn sample(&mut self, pressed: bool, now: Instant) -> bool {
        if pressed != self.candidate {
            self.candidate = pressed;
            self.since = Some(now);
        }
        let held = self
            .since
            .is_some_and(|t| now.duration_since(t) >= self.hold);
        if held && self.candidate != self.stable {
            self.stable = self.candidate;
            return self.stable;
        }
        false
    }
}

/// Every source of shutter events that this machine has.
pub struct Shutter {
    #[cfg(target_os = "linux")]
    button: Option<(rppal::gpio::InputPin, Debouncer)>,
    keyboard: Arc<AtomicBool>,
    pub sources: Vec<String>,
}

impl Shutter {
    /// GPIO `pin` when given and the GPIO is there (a Raspberry Pi); always SIGUSR1; Enter on
    /// stdin when `keyboard` is set.
    pub fn open(pin: Option<u8>, keyboard: bool) -> Self {
        let mut sources = vec!["SIGUSR1".to_string()];
        #[cfg(target_os = "linux")]
        let button = pin.and_then(|p| match rppal::gpio::Gpio::new().and_then(|g| g.get(p)) {
            Ok(pin) => {
                sources.push(format!("button on GPIO {p}"));
                Some((
                    pin.into_input_pullup(),
                    Debouncer::new(Duration::from_millis(30)),
                ))
            }
            Err(e) => {
                eprintln!("shutter button on GPIO {p} unavailable ({e}); using the other sources");
                None
            }
        });
        #[cfg(not(target_os = "linux"))]
        let _ = pin;
        let flag = Arc::new(AtomicBool::new(false));
        if keyboard {
            sources.push("Enter".to_string());
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    flag.store(true, Ordering::SeqCst);
                    line.clear();
                }
            });
        }
        Self {
            #[cfg(target_os = "linux")]
            button,
            keyboard: flag,
            sources,
        }
    }

    /// True when the shutter was pressed since the last call.
    pub fn pressed(&mut self) -> bool {
        let mut pressed = SHUTTER_SIGNAL.swap(false, Ordering::SeqCst);
        pressed |= self.keyboard.swap(false, Ordering::SeqCst);
        #[cfg(target_os = "linux")]
        if let Some((pin, debouncer)) = self.button.as_mut() {
            // Pull-up: pressed connects the pin to ground.
            pressed |= debouncer.sample(pin.is_low(), Instant::now());
        }
        pressed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    /// Steady on: waiting for frames.
    Ready,
    /// Toggles once per processed frame.
    Busy,
    /// Blinks on every update: camera lost or a failure.
    Error,
}

pub struct StatusLed {
    #[cfg(target_os = "linux")]
    pin: Option<rppal::gpio::OutputPin>,
    lit: bool,
}

impl StatusLed {
    pub fn open(pin: Option<u8>) -> Self {
        #[cfg(target_os = "linux")]
        let pin = pin.and_then(|p| match rppal::gpio::Gpio::new().and_then(|g| g.get(p)) {
            Ok(pin) => Some(pin.into_output_low()),
            Err(e) => {
                eprintln!("status LED on GPIO {p} unavailable ({e})");
                None
            }
        });
        #[cfg(not(target_os = "linux"))]
        let _ = pin;
        Self {
            #[cfg(target_os = "linux")]
            pin,
            lit: false,
        }
    }

    pub fn show(&mut self, state: LedState) {
        self.lit = match state {
            LedState::Ready => true,
            LedState::Busy | LedState::Error => !self.lit,
        };
        #[cfg(target_os = "linux")]
        if let Some(pin) = self.pin.as_mut() {
            if self.lit {
                pin.set_high();
            } else {
                pin.set_low();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_are_one_press() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(30));
        // Contact bounce: pressed/released flicker for 10 ms, then held.
        let samples = [
            (0, true),
            (2, false),
            (4, true),
            (7, false),
            (9, true),
            (20, true),
            (38, true),
            (45, true),
        ];
        let presses: usize = samples
            .iter()
            .map(|&(t, p)| usize::from(d.sample(p, ms(t))))
            .sum();
        assert_eq!(presses, 1);
        // A 10 ms glitch while released is not a press; a real second press is.
        assert!(!d.sample(false, ms(50)));
        assert!(!d.sample(false, ms(90)));
        assert!(!d.sample(true, ms(100)));
        assert!(!d.sample(false, ms(110)));
        assert!(!d.sample(false, ms(150)));
        assert!(!d.sample(true, ms(200)));
        assert!(d.sample(true, ms(231)));
    }
}
