//! What Linux keeps per process under `/proc`: CPU time (`stat`) and peak resident memory
//! (`status`). The benchmark reads the measured connector's figures there, and its own (the
//! in-process emulator's CPU), so both go through these two readers.

/// Clock ticks per second of `utime` and `stime` in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Which process to read.
#[derive(Clone, Copy, Debug)]
pub enum Process {
    /// This process: the orchestrator with the in-process emulator.
    Own,
    /// Another one, by id: the measured connector.
    Pid(u32),
}

impl Process {
    /// `/proc/self/<file>` or `/proc/<pid>/<file>`, empty if it cannot be read (the process ended).
    fn read(self, file: &str) -> String {
        let path = match self {
            Process::Own => format!("/proc/self/{file}"),
            Process::Pid(pid) => format!("/proc/{pid}/{file}"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// CPU seconds (user + system) the process has used so far; 0 when it cannot be read.
pub fn cpu_seconds(p: Process) -> f64 {
    let stat = p.read("stat");
    // Fields after the `(comm)` field (which may itself hold spaces and parentheses); utime and
    // stime are the 12th and 13th of those.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// Peak resident set size (`VmHWM`) of the process, in MiB; 0 when it cannot be read.
pub fn peak_rss_mib(p: Process) -> f64 {
    p.read("status")
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
