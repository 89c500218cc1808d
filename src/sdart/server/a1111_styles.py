"""A1111 prompt styles: a `styles.csv` of name,prompt,negative_prompt rows, applied by a request's `styles`.

As A1111's modules/styles.py: a style text holding `{prompt}` has the prompt put in its place, any other is
appended after a comma; styles apply in the order the request lists them, to the prompt and (with their negative
texts) to the negative prompt. Rows whose name starts with `#` are comments; an old file's `text` column is the
prompt.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


class StyleFile:
    """The styles of one CSV file, read again whenever the file changes (users edit it while the server runs)."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._styles: dict[str, PromptStyle] = {}

    def styles(self) -> dict[str, PromptStyle]:
        try:
            stat = self.path.stat()
        except OSError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._styles, self._stamp = read_styles(self.path), stamp
        return self._styles


def read_styles(path: Path) -> dict[str, PromptStyle]:
    """The styles in `path` by name; a file that can't be read logs why and gives none."""
    styles: dict[str, PromptStyle] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            for row in csv.DictReader(file, skipinitialspace=True):
                name = (row.get("name") or "").strip()
                if not name or name.startswith("#"):
                    continue
                prompt = row.get("prompt") if "prompt" in row else row.get("text")
                styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("prompt styles: %s could not be read (%s)", path, exc)
    return styles


def merge_style(style_text: str, prompt: str) -> str:
    """One style applied to a prompt (A1111's merge_prompts)."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, names: list[str],
                 styles: dict[str, PromptStyle]) -> tuple[str, str, list[str]]:
    """The prompt and negative prompt with the named styles applied, and the names not found."""
    missing = [name for name in names if name not in styles]
    for name in names:
        if name in styles:
            prompt = merge_style(styles[name].prompt, prompt)
            negative_prompt = merge_style(styles[name].negative_prompt, negative_prompt)
    return prompt, negative_prompt, missing
