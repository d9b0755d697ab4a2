//! A child forked while another thread reads the tracing state (as every traced decision does)
//! must be able to change it: no lock of the parent's may be inherited held. Tracing state is
//! process-wide, so this binary holds this one test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use floodwall::telemetry;

#[test]
fn a_child_forked_while_a_thread_reads_the_tracing_state_traces_anew_and_can_turn_it_off() {
    telemetry::enable_test_tracing(false).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        // flush_tracing reads the state the way a traced decision does (and takes the exporter's lock)
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(telemetry::flush_tracing());
            }
        })
    };
    for i in 0..200 {
        // SAFETY: the child only calls into floodwall's tracing (which must not block) and _exit
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // a child that hangs is ended by SIGALRM, which the parent sees as a failure
            unsafe { libc::alarm(5) };
            // traces anew here (the parent's exporter has no threads in this process), then stops
            let flushed = telemetry::flush_tracing();
            telemetry::disable_tracing();
            if !flushed {
                unsafe { libc::_exit(3) };
            }
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork {i}: the child hung or failed (status {status:#x})"
        );
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    telemetry::disable_tracing();
}
