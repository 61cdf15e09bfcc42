"""invoke entry point: the tasks live in the buildbox package (src/buildbox/tasks.py)."""

from pathlib import Path

from buildbox.tasks import namespace

ns = namespace(root=Path(__file__).parent)
