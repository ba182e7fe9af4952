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
