"""Output names and dataset names of production (pure; etc/naming.md, "Names elsewhere").

- A file made from an input file keeps the input's stem and adds the step's release and extension:
  raw `RUN.….002.dat` → rtraw `RUN.….002_J25.1.0.rtraw` → esd `RUN.….002_J25.1.0_J25.1.0.esd`.
- The first step of a Monte Carlo chain has no input: `<transformation>.<job:06d>_<release>.<ext>`;
  later steps follow the first rule (`mc-ibd.000003_J25.1.0_J25.1.0.elecsim`).
- Outputs are grouped in one dataset per transformation, step and input block (or chunk of 1,000 Monte
  Carlo jobs): `<scope>.<transformation>.<step>.<group>`, in the step's output scope (the name starts with
  the scope, so the rucio CLI finds the scope from the name alone).
"""

from __future__ import annotations

from juno_prod.model import Step

NAME_MAX = 250
MC_GROUP_SIZE = 1000


class NamingError(ValueError):
    """An output name would break etc/naming.md (too long, ...)."""


def stem(name: str) -> str:
    """The name without its last extension ('a.b.dat' → 'a.b')."""
    head, dot, _ = name.rpartition(".")
    return head if dot else name


def output_name(step: Step, input_name: str) -> str:
    out = f"{stem(input_name)}_{step.release}.{step.ext}"
    if len(out) > NAME_MAX:
        raise NamingError(f"output name of {input_name} would be {len(out)} characters (at most {NAME_MAX})")
    return out


def mc_input_name(transformation: str, index: int) -> str:
    """The stand-in input of Monte Carlo job `index`: the output is named after it."""
    return f"{transformation}.{index:06d}.job"


def mc_group(index: int) -> str:
    return f"jobs{index // MC_GROUP_SIZE:04d}"


def dataset_name(scope: str, transformation: str, step: str, group: str) -> str:
    out = f"{scope}.{transformation}.{step}.{group}"
    if len(out) > NAME_MAX:
        raise NamingError(f"dataset name {out[:60]}… is {len(out)} characters (at most {NAME_MAX})")
    return out
