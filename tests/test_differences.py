"""The differences catalog: every entry's demonstration runs on the installed frameworks and every
measured finding must hold as the catalog documents it; the README's table is generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import crossnn
from crossnn.cli import main
from crossnn.differences import BY_ID, ENTRIES, Lab, Unavailable, applicable, readme_section

LAB = Lab()  # facts are measured once per framework for the whole module


@pytest.mark.parametrize("entry_id", [e.id for e in ENTRIES])
def test_entry_demonstration_holds(entry_id):
    entry = BY_ID[entry_id]
    try:
        findings = entry.demonstrate(LAB)
    except Unavailable as err:
        pytest.skip(f"{entry_id}: {err}")
    assert findings
    for finding in findings:
        assert finding.holds, f"{entry_id}: {finding.text}"


def test_catalog_covers_the_required_entries():
    required = {"weight-layout", "default-init", "momentum-sgd", "adam-epsilon", "weight-decay", "rmsprop", "adagrad",
                "bce-clamp", "cross-entropy-inputs", "loss-reduction", "target-broadcasting", "default-learning-rates",
                "leaky-relu-slope", "gelu-approximation", "batchnorm", "tf32", "random-streams"}
    assert required <= set(BY_ID)
    for entry in ENTRIES:
        assert entry.what and entry.torch and entry.keras and entry.crossnn and entry.sources


def test_readme_section_is_generated_from_the_catalog():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- differences:start -->\n(.*?)\n<!-- differences:end -->", readme, re.S)
    assert block, "README.md lacks the generated differences section"
    assert block.group(1).strip() == readme_section().strip(), "regenerate it: crossnn differences --markdown"


def test_applicable_entries_follow_the_spec():
    circle = {e.id for e in applicable(crossnn.example("circle"))}
    assert {"momentum-sgd", "bce-clamp", "default-init"} <= circle
    assert "adam-epsilon" not in circle and "batchnorm" not in circle
    assert "adam-epsilon" in {e.id for e in applicable(crossnn.example("two-tower"))}


def test_unknown_entry_is_bad_input(capsys):
    assert main(["differences", "no-such-thing"]) == 2
    assert "no catalog entry 'no-such-thing'" in capsys.readouterr().err
