"""mkdocs hook: fills docs/cli.md from the click commands themselves, so the reference cannot go stale."""

from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"


def _render(command: click.Command, name: str, parent: click.Context | None, depth: int) -> list[str]:
    settings = {**command.context_settings, "max_content_width": 100, "terminal_width": 100}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    path = ctx.command_path
    out = [f"{'#' * depth} `{path}`", "", "```text", command.get_help(ctx), "```", ""]
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            out += _render(command.get_command(ctx, sub), sub, ctx, min(depth + 1, 4))
    return out


def reference() -> str:
    from occlusion_distill.cli import cli

    return "\n".join(_render(cli, "occdistill", None, 2))


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
