//! The Debian package as users install it: scripts/build-deb.sh builds the
//! arm64 .deb (from the same aarch64 release build the emulated Pi boots,
//! built once per test run by scripts/test.sh), then this test reads it
//! back: lintian finds nothing but what the package overrides on purpose,
//! the manual pages are real roff generated from the command-line
//! definitions (one per subcommand), and the bash completion loads and
//! completes subcommands.
//!
//! Needs dpkg-deb, lintian and the cross toolchain (scripts/test.sh
//! installs them); a missing tool is a failure, not a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn build_deb() -> PathBuf {
    let out = run(common::cargo_script(&root().join("scripts/build-deb.sh"))
        .arg("arm64")
        .current_dir(root()));
    let deb = out.lines().last().expect("build-deb.sh prints the path");
    root().join(deb.trim())
}

fn unpack(deb: &Path) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("package-contents");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir));
    dir
}

#[test]
fn the_deb_is_lintian_clean_and_ships_manual_pages_and_completions() {
    for tool in ["dpkg-deb", "lintian", "aarch64-linux-gnu-gcc"] {
        assert!(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is not installed: run scripts/install-cross-deps.sh and apt-get install lintian"
        );
    }
    let deb = build_deb();

    // lintian: nothing at all beyond the override, which it must use.
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--show-overrides"])
        .arg(&deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("package: lintian says:\n{report}");
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with("N:") && !l.trim().is_empty())
        .collect();
    assert!(
        findings
            .iter()
            .all(|l| l.starts_with("O: campeer: non-standard-file-perm")),
        "lintian findings besides the intended override:\n{report}"
    );
    assert!(
        findings.iter().any(|l| l.starts_with("O: ")),
        "the 0640 configuration override was not used (is the file still 0640?):\n{report}"
    );

    let dir = unpack(&deb);
    let man = dir.join("usr/share/man/man1");
    for page in ["campeer.1.gz", "campeer-run.1.gz", "campeer-view.1.gz"] {
        let text = run(Command::new("zcat").arg(man.join(page)));
        assert!(text.starts_with(".ie") || text.contains("\n.TH "), "{page}");
        assert!(text.contains(".TH "), "{page} has no title line");
    }
    let run_page = run(Command::new("zcat").arg(man.join("campeer-run.1.gz")));
    assert!(
        run_page.contains("open\\-access") && run_page.contains("state\\-dir"),
        "campeer-run(1) lacks the run flags"
    );

    let bash = dir.join("usr/share/bash-completion/completions/campeer");
    let words = run(Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(campeer k); COMP_CWORD=1; COMP_LINE='campeer k'; COMP_POINT=9; _campeer campeer k campeer; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    assert!(
        words.lines().any(|w| w == "keys"),
        "bash completion of `campeer k` gave {words:?}"
    );
    for f in [
        "usr/share/zsh/vendor-completions/_campeer",
        "usr/share/fish/vendor_completions.d/campeer.fish",
        "usr/bin/campeer",
        "lib/systemd/system/campeer.service",
    ] {
        assert!(dir.join(f).is_file(), "{f} is not in the package");
    }
}
