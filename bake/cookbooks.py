"""Chef cookbooks checked without converging them: the run list and every `depends` and
`include_recipe` resolve to folders and files in `cookbooks/`, every template a recipe names exists,
and every `.rb` and `.erb` file compiles with Ruby (as `ruby -c` does)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bake.errors import BakeError, InputError
from bake.runner import Runner

_METADATA_NAME = re.compile(r"""^\s*name\s*\(?\s*['"]([^'"]+)['"]""", re.MULTILINE)
_DEPENDS = re.compile(r"""^\s*depends\s*\(?\s*['"]([^'"]+)['"]""", re.MULTILINE)
_INCLUDE = re.compile(r"""\binclude_recipe\s*\(?\s*['"]([^'"#]+)['"]""")
_TEMPLATE_SOURCE = re.compile(r"""^\s*source\s*\(?\s*['"]([^'"]+\.erb)['"]""", re.MULTILINE)

# Compiles each file named on the command line (an .erb through ERB, as Chef renders it) the way
# `ruby -c` does, in one process, and prints `path:line: problem` for each one that fails.
_SYNTAX_CHECK = r"""
require "erb"
failed = false
ARGV.each do |path|
  source = File.read(path)
  if path.end_with?(".erb")
    RubyVM::InstructionSequence.compile(ERB.new(source, trim_mode: "-").src, path, path, 0)
  else
    RubyVM::InstructionSequence.compile(source, path, path, 1)
  end
rescue SyntaxError => e
  failed = true
  lines = e.message.lines.map(&:strip).reject(&:empty?)
  detail = lines.drop(1).find { |line| line =~ /(unexpected|expected|invalid)/i }
  puts [lines.first, detail].compact.join(" ")
rescue StandardError => e
  failed = true
  puts "#{path}: #{e.class}: #{e.message.lines.first.to_s.strip}"
end
exit(failed ? 1 : 0)
"""


@dataclass(frozen=True)
class Cookbook:
    """A cookbook folder and what its metadata.rb declares."""

    name: str
    path: Path
    metadata_name: str | None
    depends: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Cookbook:
        metadata = path / "metadata.rb"
        if not metadata.is_file():
            return cls(path.name, path, None, ())
        text = metadata.read_text(encoding="utf-8")
        name = _METADATA_NAME.search(text)
        return cls(path.name, path, name.group(1) if name else None, tuple(_DEPENDS.findall(text)))

    def recipe(self, name: str) -> Path:
        return self.path / "recipes" / f"{name}.rb"

    def ruby_files(self) -> list[Path]:
        """Every file Chef evaluates as Ruby: .rb files and ERB templates."""
        return sorted(
            path
            for pattern in ("*.rb", "*.erb")
            for path in self.path.rglob(pattern)
            if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(self.path).parts)
        )


def load_cookbooks(cookbooks_path: Path) -> dict[str, Cookbook]:
    """Every cookbook folder under `cookbooks_path`, by folder name."""
    if not cookbooks_path.is_dir():
        raise InputError(
            f"no cookbooks folder at {cookbooks_path}", hint="set cookbooks_dir in bake.toml"
        )
    return {
        path.name: Cookbook.load(path)
        for path in sorted(cookbooks_path.iterdir())
        if path.is_dir() and not path.name.startswith(".")
    }


def _reference(text: str) -> tuple[str, str]:
    """`cookbook` or `cookbook::recipe` as (cookbook, recipe)."""
    cookbook, _, recipe = text.partition("::")
    return cookbook, recipe or "default"


def needed_cookbooks(
    cookbooks: dict[str, Cookbook], run_list: tuple[str, ...]
) -> tuple[list[Cookbook], list[str]]:
    """The cookbooks a run list needs, through their `depends`, and the run list's problems."""
    problems: list[str] = []
    pending: list[str] = []
    for item in run_list:
        cookbook, recipe = _reference(item.removeprefix("recipe[").removesuffix("]"))
        if cookbook not in cookbooks:
            problems.append(f"run_list {item}: no cookbook folder '{cookbook}'")
        elif not cookbooks[cookbook].recipe(recipe).is_file():
            problems.append(f"run_list {item}: cookbook '{cookbook}' has no recipes/{recipe}.rb")
        pending.append(cookbook)
    needed: dict[str, Cookbook] = {}
    while pending:
        name = pending.pop(0)
        if name in cookbooks and name not in needed:
            needed[name] = cookbooks[name]
            pending.extend(cookbooks[name].depends)
    return list(needed.values()), problems


def cookbook_problems(cookbook: Cookbook, cookbooks: dict[str, Cookbook]) -> list[str]:
    """What would stop Chef from loading this cookbook: metadata, depends, includes, templates."""
    root = cookbook.path.parent.parent
    metadata = _shown(cookbook.path / "metadata.rb", root)
    if cookbook.metadata_name is None:
        return [f"{metadata}: missing or without a name (write name '{cookbook.name}')"]
    problems = []
    if cookbook.metadata_name != cookbook.name:
        problems.append(
            f"{metadata}: name '{cookbook.metadata_name}' differs from its folder "
            f"'{cookbook.name}' (Chef finds cookbooks by name)"
        )
    for dependency in cookbook.depends:
        if dependency not in cookbooks:
            problems.append(
                f"{metadata}: depends '{dependency}', but there is no cookbook "
                f"folder {_shown(cookbook.path.parent / dependency, root)}"
            )
    for recipe in sorted((cookbook.path / "recipes").glob("*.rb")):
        problems += _recipe_problems(recipe, cookbook, cookbooks, root)
    return problems


def _recipe_problems(
    recipe: Path, cookbook: Cookbook, cookbooks: dict[str, Cookbook], root: Path
) -> list[str]:
    text = recipe.read_text(encoding="utf-8")
    problems = []
    for match in _INCLUDE.finditer(text):
        where = f"{_shown(recipe, root)}:{text.count(chr(10), 0, match.start()) + 1}"
        target, name = _reference(match.group(1))
        if target != cookbook.name and target not in cookbook.depends:
            problems.append(
                f"{where}: include_recipe '{match.group(1)}' needs depends "
                f"'{target}' in {cookbook.name}'s metadata.rb"
            )
        elif target in cookbooks and not cookbooks[target].recipe(name).is_file():
            problems.append(
                f"{where}: include_recipe '{match.group(1)}': no "
                f"{_shown(cookbooks[target].recipe(name), root)}"
            )
    for match in _TEMPLATE_SOURCE.finditer(text):
        if not any((cookbook.path / "templates").rglob(match.group(1))):
            where = f"{_shown(recipe, root)}:{text.count(chr(10), 0, match.start()) + 1}"
            problems.append(
                f"{where}: template source '{match.group(1)}' is not in "
                f"{_shown(cookbook.path / 'templates', root)}"
            )
    return problems


def syntax_problems(runner: Runner, files: list[Path], root: Path) -> list[str]:
    """`path:line: problem` for each Ruby or ERB file that does not compile, from one ruby run."""
    if not files:
        return []
    try:
        result = runner.run(
            ["ruby", "-e", _SYNTAX_CHECK, *map(str, files)], check=False, timeout=120
        )
    except BakeError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise InputError(
                "cookbooks cannot be checked: ruby is not installed", hint="apt-get install ruby"
            ) from None
        raise
    if result.ok:
        return []
    shown = [line.strip().replace(f"{root}/", "") for line in result.stdout.splitlines()]
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return [line for line in shown if line] or [f"ruby could not check the cookbooks: {tail}"]


def check_cookbooks(runner: Runner, cookbooks_path: Path) -> None:
    """Check every cookbook in the folder (for tests and `bake doctor`); raise InputError."""
    cookbooks = load_cookbooks(cookbooks_path)
    if not cookbooks:
        raise InputError(f"no cookbooks in {cookbooks_path}")
    problems = [
        problem
        for cookbook in cookbooks.values()
        for problem in cookbook_problems(cookbook, cookbooks)
    ]
    files = [path for cookbook in cookbooks.values() for path in cookbook.ruby_files()]
    problems += syntax_problems(runner, files, cookbooks_path.parent)
    if problems:
        raise InputError("cookbooks do not pass their checks: " + "; ".join(problems))


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
