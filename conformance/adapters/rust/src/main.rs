//! The native adapter: one JSON request per line on stdin, one response per line on stdout.
use std::io::{BufRead, Write};

fn main() {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in stdin.lock().split(b'\n') {
        let line = match line {
            Ok(l) => l,
            Err(_) => break,
        };
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let response = flk_pcs::handle_line(&line);
        if out.write_all(response.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
