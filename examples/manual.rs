//! Writes campeer's manual pages and shell completions from the
//! command-line definitions, so they never drift from `--help`:
//!
//!     cargo run --example manual -- OUT_DIR
//!
//! OUT_DIR/man1/campeer.1 (and one page per subcommand, campeer-run.1, ...)
//! and OUT_DIR/completions/{campeer.bash,_campeer,campeer.fish}.
//! scripts/build-deb.sh installs them into the package.

use campeer::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "usage: manual OUT_DIR")
    })?);
    let man = out.join("man1");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        let path = clap_complete::generate_to(shell, &mut cmd, "campeer", &completions)?;
        println!("{}", path.display());
    }
    for entry in std::fs::read_dir(&man)? {
        println!("{}", entry?.path().display());
    }
    Ok(())
}
