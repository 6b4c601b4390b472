//! Command output on stdout, and how to name this binary in a hint. A ground-floor module:
//! the CLI and the demo print through it.

/// `println!` for command output. A closed stdout (`status --json | head`) ends the process
/// quietly with exit 0, as ripgrep and the coreutils do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line of command output (what `outln!` expands to).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: could not write the output: {e}");
        std::process::exit(1);
    }
}

/// How to run this binary again from the same shell: `waba-monitor` when that name on PATH is
/// this very file, else its path (relative to the working folder when it lies under it), so a
/// hint printed after `cargo run` works when pasted.
pub fn self_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "waba-monitor".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::canonicalize(dir.join("waba-monitor")).is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return "waba-monitor".into();
    }
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(std::path::Path::to_path_buf))
    {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}
