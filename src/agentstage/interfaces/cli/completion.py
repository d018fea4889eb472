"""Shell completion: ``agent --install-completion`` says every file it writes or changes.

Installing touches files in the user's home (a completion script, and for bash and zsh one line
in the shell's start-up file). Nothing is changed silently: each change is printed with its path,
a line that is already there is not added twice, and the output says how to undo it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

# Typer's own completion protocol (the scripts call back into `agent` with these variables set).
from typer._completion_classes import completion_init
from typer._completion_shared import _get_shell_name, get_completion_script

PROG = "agent"
COMPLETE_VAR = "_AGENT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

completion_init()  # Typer's completion classes answer the shell's Tab requests


def _detect_shell() -> str:
    try:
        detected = _get_shell_name()
    except Exception:  # detection is best effort; $SHELL is the fallback
        detected = None
    return detected or Path(os.environ.get("SHELL", "")).name


def _shell_or_fail() -> str:
    shell = _detect_shell()
    if shell not in SHELLS:
        typer.secho(
            f"error: cannot install completion for shell {shell or 'unknown'!r} (supported: "
            f"{', '.join(SHELLS)}); print the script with --show-completion and load it yourself",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    return shell


def _script(shell: str) -> str:
    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def _append_once(path: Path, line: str) -> bool:
    """Append ``line`` to ``path`` unless it is already there; True when the file changed."""
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if line in current.splitlines():
        return False
    separator = "" if not current or current.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as file:
        file.write(f"{separator}{line}\n")
    return True


def install(shell: str, home: Path) -> list[str]:
    """Install completion for ``shell`` under ``home``; returns one sentence per change made."""
    scripts = {
        "bash": home / ".bash_completions" / f"{PROG}.sh",
        "zsh": home / ".zfunc" / f"_{PROG}",
        "fish": home / ".config" / "fish" / "completions" / f"{PROG}.fish",
    }
    script = scripts[shell]
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_script(shell), encoding="utf-8")
    changes = [f"wrote the {shell} completion script to {script}"]
    loader = {
        "bash": (home / ".bashrc", f"source '{script}'"),
        "zsh": (home / ".zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit"),
    }.get(shell)
    if loader is not None:
        rc_file, line = loader
        if _append_once(rc_file, line):
            changes.append(f"added this line to {rc_file}: {line}")
        else:
            changes.append(f"{rc_file} already has the line that loads it")
    return changes


def _install(value: bool) -> None:
    if not value:
        return
    shell = _shell_or_fail()
    for change in install(shell, Path.home()):
        typer.echo(change)
    typer.echo("Open a new shell to use it. To undo, delete the script (and the added line).")
    raise typer.Exit(0)


def _show(value: bool) -> None:
    if not value:
        return
    shell = _shell_or_fail()
    typer.echo(_script(shell), nl=False)
    raise typer.Exit(0)


InstallOption = Annotated[
    bool | None,
    typer.Option(
        "--install-completion",
        callback=_install,
        is_eager=True,
        expose_value=True,
        help="Install Tab completion for your shell (bash, zsh, fish): writes a script in your home "
        "and, for bash and zsh, adds one line to ~/.bashrc or ~/.zshrc; prints every change.",
        show_default=False,
    ),
]
ShowOption = Annotated[
    bool | None,
    typer.Option(
        "--show-completion",
        callback=_show,
        is_eager=True,
        help="Print the completion script for your shell instead of installing it.",
        show_default=False,
    ),
]
