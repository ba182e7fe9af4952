"""The ``slm`` command line. Every sub-command is a thin wrapper over a harness/results function;
user errors print one line and exit 2."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from adapters.errors import SLMError
from adapters.runtime import prepare_process

app = typer.Typer(
    name="slm",
    help="Benchmark and evaluation harness for the small-language-model lifecycle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("models")
def models_cmd() -> None:
    """List the builtin model sources (other sources: an HF directory, a .gguf file, a hub id)."""
    from adapters.sources import BUILTIN_MODELS

    for name, model in BUILTIN_MODELS.items():
        typer.echo(f"{name:28s} {model.description}")
    typer.echo("\nAlso accepted: a local Hugging Face directory, a .gguf file, a hub id (needs network).")


@app.command("techniques")
def techniques_cmd() -> None:
    """List registered techniques by lifecycle component, with the artifact formats each accepts and produces."""
    from adapters.components import COMPONENTS
    from adapters.formats import FORMATS, format_names
    from adapters.technique import TECHNIQUES, describe_formats

    by_comp: dict[str, list[str]] = {}
    for name, cls in TECHNIQUES.items():
        by_comp.setdefault(cls.component.key, []).append(f"  {name:26s} {cls.summary()}\n"
                                                         f"  {'':26s} formats: {describe_formats(cls)}")
    for comp in COMPONENTS:
        lines = by_comp.get(comp.key, [])
        typer.echo(f"{comp.title} ({comp.kind}): {len(lines)}")
        for line in lines:
            typer.echo(line)
    typer.echo("\nArtifact formats (input -> output above; * = converted first, e.g. dequantized):")
    for name in format_names():
        typer.echo(f"  {name:20s} {FORMATS.get(name).description}")


@app.command("suites")
def suites_cmd() -> None:
    """List registered suites."""
    from suites.base import SUITES

    for name, cls in SUITES.items():
        typer.echo(f"{name:14s} {cls.summary()}")


@app.command("generate")
def generate_cmd(
    prompt: str,
    model: Annotated[str, typer.Option("--model", "-m", help="model source")] = "smollm2-135m-instruct",
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 24,
    threads: Annotated[int, typer.Option(help="torch intra-op threads")] = 1,
) -> None:
    """Greedy-generate from a prompt (a quick check that a model source loads and works)."""
    from adapters.sources import load_source

    handle = load_source(model, threads=threads)
    typer.echo(prompt + handle.generate([prompt], max_new_tokens=max_new_tokens)[0])


def _register_optional_commands() -> None:
    """Commands whose modules other packages own; each registers itself on ``app`` when present."""
    import importlib

    for module in ("harness.commands", "results.commands", "leaderboard.commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # only a missing package/module of our own is optional; a missing dependency inside it is a bug
            if exc.name is None or not module.startswith(exc.name):
                raise
            continue
        mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``slm`` console script."""
    prepare_process()
    _register_optional_commands()
    try:
        # with standalone_mode=False click returns the code of a ``typer.Exit`` instead of exiting
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except SLMError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except OSError as exc:  # a full disk or a read-only folder that no layer named: still one line
        from adapters.errors import storage_error

        mapped = storage_error(exc, exc.filename or "a file")
        if mapped is None:
            raise
        typer.echo(f"error: {mapped}", err=True)
        sys.exit(mapped.exit_code)
    except Exception as exc:  # click's usage errors: typer 0.29 raises its vendored click's (typer.TyperException)
        import click

        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            usage = any(c.__name__ == "UsageError" for c in type(exc).__mro__)
            sys.exit(2 if usage else int(getattr(exc, "exit_code", 1)))
        raise


if __name__ == "__main__":
    main()
