//! The moment a close of the last handle has marked the client closing, as the client's own
//! debug record tells it ("closing the client (last handle) ...", target `tokengate`, logged
//! right after the mark is set).
//!
//! One logger for the whole test binary (a process has only one), installed by the first
//! test that asks and shared by every test that does: the tests of this binary run at the
//! same time, so each one receives only the records of its own closing thread, by name.

use std::sync::mpsc;
use std::sync::{Mutex, Once};

/// Threads (by name) whose "closing" record is awaited, and where to report it.
static WATCHED: Mutex<Vec<(String, mpsc::Sender<()>)>> = Mutex::new(Vec::new());

struct ClosingLog;

impl log::Log for ClosingLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "tokengate"
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "tokengate"
            || !record
                .args()
                .to_string()
                .starts_with("closing the client (last handle)")
        {
            return;
        }
        let Some(name) = std::thread::current().name().map(str::to_owned) else {
            return;
        };
        for (watched, tx) in WATCHED.lock().unwrap().iter() {
            if *watched == name {
                let _ = tx.send(());
            }
        }
    }
    fn flush(&self) {}
}

/// Receives a message each time the thread named `thread` has marked a client closing
/// (closed its last handle). Give the closing thread a name no other test uses.
pub fn closing_marked_on(thread: &str) -> mpsc::Receiver<()> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&ClosingLog).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
    let (tx, rx) = mpsc::channel();
    WATCHED.lock().unwrap().push((thread.to_owned(), tx));
    rx
}
