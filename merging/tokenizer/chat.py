"""Chat templates (mergekit's `chat_template`): a built-in name, `auto` (the template most
of the merged models use), or the text of a Jinja template.

Built-in names are read from the installed mergekit's own template files when mergekit is
installed (chatml, llama3, alpaca, mistral, exaone, ...), else from weightzoo's small
templates below (chatml and alpaca, written here, rendering the same text). The rules for
telling a name from a template follow mergekit's `_set_chat_template`: a short one-line
text without `{` is a name; anything else must be a template (at least 20 characters, with
`{`). Light: no transformers; jinja2 only to check a template's syntax.
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Iterable

AUTO = "auto"

# weightzoo's own templates, for when mergekit is not installed (same rendering as mergekit's)
OWN: dict[str, str] = {
    # <|im_start|>ROLE\nCONTENT<|im_end|>\n per message; then the assistant's header if asked
    "chatml": ("{%- for m in messages -%}{{ '<|im_start|>' ~ m['role'] ~ '\\n' ~ m['content'] ~ '<|im_end|>\\n' }}"
               "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"),
    # the last system message (trimmed), a blank line, then each turn under its ### header,
    # turns separated by a blank line; "### Response:" opens the answer if asked (straight
    # after the last turn, as mergekit's alpaca renders it)
    "alpaca": ("{%- set system = messages | selectattr('role', 'equalto', 'system') | list -%}"
               "{{ system[-1]['content'] | trim if system else '' }}{{ '\\n\\n' }}"
               "{%- set headers = {'user': 'Instruction', 'assistant': 'Response', 'user_context': 'Input'} -%}"
               "{%- for m in messages -%}{%- if m['role'] in headers -%}"
               "{{ '### ' ~ headers[m['role']] ~ ':\\n' ~ m['content'] | trim }}{{ '\\n\\n' if not loop.last }}"
               "{%- endif -%}{%- endfor -%}"
               "{%- if add_generation_prompt and messages[-1]['role'] != 'assistant' -%}"
               "{{ '### Response:\\n' }}{%- endif -%}"),
}


def _mergekit_dir() -> Path | None:
    """mergekit's chat template folder, found without importing mergekit."""
    spec = importlib.util.find_spec("mergekit")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "_data" / "chat_templates"
    return folder if folder.is_dir() else None


def builtin_names() -> list[str]:
    folder = _mergekit_dir()
    theirs = {p.stem for p in folder.glob("*.jinja")} if folder else set()
    return sorted(theirs | set(OWN))


def builtin(name: str) -> tuple[str, str]:
    """(template text, where it came from) of a built-in name."""
    folder = _mergekit_dir()
    if folder is not None and (folder / f"{name}.jinja").is_file():
        return (folder / f"{name}.jinja").read_text(encoding="utf-8"), f"mergekit's {name}.jinja"
    return OWN[name], f"weightzoo's {name}"


def is_name(value: str) -> bool:
    """mergekit's test: a short one-line text without `{` names a template."""
    return len(value) < 256 and "\n" not in value and "{" not in value


def template_problem(value: str) -> str | None:
    """Why `value` is not a chat template setting, or None."""
    if value == AUTO:
        return None
    if is_name(value):
        if value in builtin_names():
            return None
        return (f"chat_template {value!r} is not a built-in template (built-in: {', '.join(builtin_names())}); give "
                "one of them, auto (the template most of the merged models use), or the text of a Jinja template")
    if len(value) < 20 or "{" not in value:
        return (f"chat_template {value[:40]!r} is neither a built-in name nor a Jinja template (a template has "
                "{{ }} or {% %} and at least 20 characters)")
    import jinja2

    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as e:
        return f"chat_template: the Jinja template does not parse (line {e.lineno}: {e.message})"
    return None


def plurality(templates: Iterable[str | dict | None]) -> str | None:
    """`auto`: the template most of the models use (the first of those tied), each stripped;
    a model with several named templates counts its `default` one (as mergekit)."""
    found = []
    for t in templates:
        if isinstance(t, dict):
            t = t.get("default")
        if t:
            found.append(t.strip())
    return Counter(found).most_common(1)[0][0] if found else None


def resolve(value: str, templates: Iterable[str | dict | None]) -> tuple[str | None, str]:
    """(the template text to write, or None to leave the tokenizer's own; where it came
    from). `templates`: the merged models' own templates (read only for auto)."""
    if value == AUTO:
        text = plurality(templates)
        return text, ("auto: the template most of the models use" if text else "auto: no model has a template")
    if is_name(value):
        return builtin(value)
    return value, "the config's own template"
