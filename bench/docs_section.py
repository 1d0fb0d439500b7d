"""Generated sections of a markdown file, between `<!-- NAME:start -->` and `<!-- NAME:end -->`."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, body: str, *, append: bool = False) -> None:
    """Replace (or, with `append`, extend) section `name`; a missing section is added at the end."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        old, tail = rest.split(end, 1)
        inner = (old.strip() + "\n\n" if append and old.strip() else "") + body.strip()
        text = f"{head}{start}\n{inner}\n{end}{tail}"
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + f"{start}\n{body.strip()}\n{end}\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote the {name} section of {path.name}")
