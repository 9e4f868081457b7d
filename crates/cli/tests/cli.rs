//! The command line's own contract: help that teaches, and honest failures for what is not built.

use std::process::Command;

fn captioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = captioner().arg("--help").output().expect("run captioner");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "caption", "extract", "train", "eval", "serve", "vocab", "inspect",
    ] {
        assert!(
            help.contains(sub),
            "--help does not mention `{sub}`:\n{help}"
        );
    }
}

#[test]
fn version_is_printed() {
    let out = captioner()
        .arg("--version")
        .output()
        .expect("run captioner");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("captioner "));
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = captioner()
        .arg("frobnicate")
        .output()
        .expect("run captioner");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}

#[test]
fn verbose_and_quiet_conflict() {
    let out = captioner()
        .args(["-v", "-q", "train", "--preset", "p.toml", "--out", "run"])
        .output()
        .expect("run captioner");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// `serve` with a model folder that does not exist fails before binding, naming the folder.
#[test]
fn serve_with_a_missing_model_names_it() {
    let out = captioner()
        .args(["serve", "--model", "no/such/model", "--port", "0"])
        .output()
        .expect("run captioner");
    assert!(!out.status.success(), "`captioner serve` succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no/such/model"),
        "`captioner serve` stderr: {stderr}"
    );
}
