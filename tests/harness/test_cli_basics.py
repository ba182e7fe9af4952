import subprocess
import sys


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)


def test_models_lists_builtins():
    out = slm("models")
    assert out.returncode == 0
    assert "smollm2-135m-instruct" in out.stdout and "tiny-llama" in out.stdout


def test_unknown_model_one_line_with_close_match():
    out = slm("generate", "hi", "--model", "tiny-lama")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'tiny-llama'" in lines[0]


def test_unknown_command_and_option_are_usage_errors_without_traceback():
    for args, message in ((("site",), "No such command 'site'"), (("results", "--bogus"), "No such option: --bogus")):
        out = slm(*args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_executor_options_are_checked_in_one_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: tiny-llama\nsuites: {}\npaths: [[]]\n")
    for args, message in ((("--executor", "inprocess", "--jobs", "2"), "--jobs 2 needs --executor subprocess or ray"),
                          (("--executor", "threads"), "--executor: 'threads' is not allowed (allowed: inprocess, "
                                                      "subprocess, ray)"),
                          (("--jobs", "0"), "--jobs: 0 is not allowed")):
        out = slm("run", str(spec), "-w", str(tmp_path / "ws"), "--no-leaderboard", "--no-progress", *args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], (args, out.stderr)
